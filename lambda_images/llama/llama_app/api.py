"""The llama.cpp generator's HTTP API (its Function URL), and how its errors look.

Routes; a direct `aws lambda invoke` takes the body of `POST /` as its payload
and returns the same answer:

- `POST /`: the llama.cpp-style payload (`{"prompt": "llamas are", "n-generate": 1}`,
  or chat `messages` rendered with the model's own template), answered whole, or
  with `stream: true` as llama.cpp server's `/completion` events, token by token;
- `POST /v1/completions`, `POST /v1/chat/completions`: OpenAI's; with
  `stream: true` OpenAI's server-sent events, sent as the tokens are generated
  (Function URL in RESPONSE_STREAM mode, or `InvokeWithResponseStream`);
- `GET /v1/models`, `GET /health` (public in API-key mode);
- `POST /tokenize`, `POST /detokenize`: llama.cpp server's.

Request bodies are JSON objects, strict: an unknown field, a string where a
number belongs or a value out of range is a 400 that names the field. Errors
come in OpenAI's shape on `/v1/...` and in llama.cpp server's
`{"error": {"code", "type", "message"}}` elsewhere; a stream that fails after
its first byte ends with an error event in the same shape. A direct invoke's
error is `{"error": {"message", "type", "param", "code", "status"}}`.

Authentication depends on the deployment (`function_url_auth`): AWS_IAM URLs
need SigV4-signed requests (service `lambda`); API_KEY URLs need
`Authorization: Bearer <key>` on every route but `GET /health`.

Limits: the body is at most MAX_BODY_BYTES (1 MiB by default, 413 beyond);
`max_tokens` at most MAX_TOKENS_LIMIT (4096, 400 beyond); prompt and answer fit
the context window (N_CTX, 4096). Generation stops before the invocation's
deadline and returns what is done (`finish_reason` `deadline` on `POST /`,
`length` with `deadline_reached: true` on the OpenAI routes).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel, Field

from lambda_common.app import FunctionApp, Invocation
from lambda_common.errors import (
    OPENAI,
    ContextLengthExceeded,
    ErrorFamily,
    InternalError,
    InvalidRequest,
    ModelNotFound,
    RequestError,
)
from lambda_common.schemas import ModelCard, ModelList
from lambda_common.streaming import Stream
from llama_app.engine import Engine, Generation, GenerationRun, SamplingParams
from llama_app.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    DirectRequest,
    DirectResponse,
    DirectStreamEvent,
    HealthResponse,
    OpenAIFinishReason,
    Sampling,
    Timings,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
    Usage,
)
from llama_app.settings import LlamaSettings

SSE = "text/event-stream"
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

_LLAMA_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class LlamaCppErrorDetail(BaseModel):
    code: int = Field(description="The HTTP status.")
    type: str
    message: str
    param: str | None = None


class LlamaCppErrorBody(BaseModel):
    """llama.cpp server's error envelope."""

    error: LlamaCppErrorDetail


class LlamaCppErrors(ErrorFamily):
    """llama.cpp server's error envelope: ``{"error": {"code": <HTTP status>, "type", "message"}}``."""

    def body(self, error: RequestError, status: int) -> dict[str, Any]:
        if isinstance(error, ContextLengthExceeded):
            kind = "exceed_context_size_error"
        else:
            kind = _LLAMA_ERROR_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            )
        body: dict[str, Any] = {"code": status, "type": kind, "message": error.message}
        if error.param is not None:
            body["param"] = error.param
        return {"error": body}


LLAMA_CPP = LlamaCppErrors("llama.cpp", model=LlamaCppErrorBody)


def sse(data: Any) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


def _sse_error(family: ErrorFamily) -> Any:
    def render(error: RequestError, status: int) -> bytes:
        return sse(family.body(error, status))

    return render


def _dump(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_none=True)  # type: ignore[no-any-return]


def _openai_finish(gen: Generation) -> tuple[OpenAIFinishReason, bool]:
    """OpenAI clients know stop and length: a deadline stop is length plus ``deadline_reached``."""
    if gen.finish_reason == "deadline":
        return "length", True
    return gen.finish_reason, False


def _usage(gen: Generation) -> Usage:
    return Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


def _chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    # Chat templates know system/user/assistant; OpenAI's newer "developer" role is a system message.
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]


class GeneratorApi:
    """The routes over one Engine (none: only the route table, for the OpenAPI document)."""

    TITLE = "llama.cpp generator (Lambda Function URL)"

    def __init__(self, engine: Engine | None = None, settings: LlamaSettings | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self.created = int(settings.model_path.stat().st_mtime) if settings is not None else 0
        self.app = app = FunctionApp(service="llama", native=LLAMA_CPP)
        app.route(
            "POST",
            "/",
            request=DirectRequest,
            response=DirectResponse,
            stream_item=DirectStreamEvent,
            family=LLAMA_CPP,
            tags=("generation",),
        )(self.direct)
        app.route(
            "POST",
            "/v1/completions",
            request=CompletionRequest,
            response=CompletionResponse,
            stream_item=CompletionResponse,
            tags=("generation",),
        )(self.completions)
        app.route(
            "POST",
            "/v1/chat/completions",
            request=ChatCompletionRequest,
            response=ChatCompletionResponse,
            stream_item=ChatCompletionChunk,
            tags=("generation",),
        )(self.chat_completions)
        app.route("GET", "/v1/models", response=ModelList, tags=("about",))(self.models)
        app.route("GET", "/health", response=HealthResponse, public=True, tags=("about",))(self.health)
        app.route("POST", "/tokenize", request=TokenizeRequest, response=TokenizeResponse, tags=("tokens",))(
            self.tokenize
        )
        app.route(
            "POST", "/detokenize", request=DetokenizeRequest, response=DetokenizeResponse, tags=("tokens",)
        )(self.detokenize)
        app.direct(lambda payload: ("POST", "/"))

    # ------------------------------------------------------------------ shared steps

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise InternalError("no model is loaded in this process")
        return self._engine

    @property
    def settings(self) -> LlamaSettings:
        if self._settings is None:
            raise InternalError("no model is loaded in this process")
        return self._settings

    def _model_named(self, name: str | None) -> None:
        """Accept no model name or this function's alias; anything else is a 404, never a fallback."""
        alias = self.settings.alias
        if name is not None and name != alias:
            raise ModelNotFound(
                f"the model `{name}` does not exist here; this function serves `{alias}`", param="model"
            )

    def _sampling(self, request: Sampling, requested: int | None, param: str) -> SamplingParams:
        settings = self.settings
        max_tokens = requested if requested is not None else settings.default_max_tokens
        if max_tokens > settings.max_tokens_limit:
            raise InvalidRequest(
                f"{param}: {max_tokens} tokens asked; MAX_TOKENS_LIMIT is {settings.max_tokens_limit}",
                param=param,
            )
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            min_p=request.min_p,
            repeat_penalty=request.repeat_penalty,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            stop=tuple(request.stop_list()),
            seed=request.seed,
        )

    def _timings(self, gen: Generation, call: Invocation) -> Timings:
        t = gen.timings
        lifecycle = self.app.lifecycle
        return Timings(
            cold_start=call.cold_start,
            start=call.start,
            init_ms=round(lifecycle.init_ms, 1) if call.start == "cold" and lifecycle.init_ms else None,
            restore_ms=round(lifecycle.restore_ms, 1)
            if call.start == "restored" and lifecycle.restore_ms is not None
            else None,
            prompt_n=gen.prompt_tokens,
            prompt_ms=round(t.prompt_ms, 2),
            prompt_per_second=round(gen.prompt_tokens / t.prompt_ms * 1000.0, 2) if t.prompt_ms > 0 else None,
            predicted_n=gen.completion_tokens,
            predicted_ms=round(t.predicted_ms, 2),
            predicted_per_second=round(t.predicted_per_second, 2) if t.predicted_per_second else None,
            total_ms=round(t.total_ms, 2),
        )

    def _log(self, route: str, gen: Generation, *, streamed: bool) -> None:
        self.app.logger.info(
            "generated",
            extra={
                "route": route,
                "streamed": streamed,
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "finish_reason": gen.finish_reason,
                "prompt_ms": round(gen.timings.prompt_ms, 1),
                "predicted_ms": round(gen.timings.predicted_ms, 1),
                "tokens_per_second": round(gen.timings.predicted_per_second or 0.0, 2),
            },
        )

    def _stream(self, events: Iterator[bytes], family: ErrorFamily, run: GenerationRun) -> Stream:
        def guarded() -> Iterator[bytes]:
            try:
                yield from events
            finally:
                run.close()  # a caller that went away stops the decoding, and frees the model

        return Stream(guarded(), media_type=SSE, on_error=_sse_error(family), headers=STREAM_HEADERS)

    # ------------------------------------------------------------------ generation routes

    def direct(self, request: DirectRequest, call: Invocation) -> DirectResponse | Stream:
        """Generate from a llama.cpp-style payload (a prompt, or chat messages)."""
        self._model_named(request.model)
        param = "n-generate" if request.n_generate is not None else "max_tokens"
        params = self._sampling(request, request.requested_tokens(), param)
        if request.messages is not None:
            prompt = self.engine.prepare_chat(_chat_messages(request.messages))
        else:
            prompt = self.engine.prepare_text(request.prompt or "")
        run = self.engine.generate(prompt, params, call.deadline)
        route = call.path if call.via == "url" else "direct"
        if not request.stream:
            gen = run.finish()
            self._log(route, gen, streamed=False)
            return DirectResponse(
                model=self.settings.alias,
                text=gen.text,
                finish_reason=gen.finish_reason,
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )

        def events() -> Iterator[bytes]:
            for piece in run:
                yield sse({"content": piece, "stop": False})
            gen = run.result
            assert gen is not None
            self._log(route, gen, streamed=True)
            last = DirectStreamEvent(
                content="",
                stop=True,
                model=self.settings.alias,
                finish_reason=gen.finish_reason,
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )
            yield sse(_dump(last))

        return self._stream(events(), LLAMA_CPP, run)

    def completions(self, request: CompletionRequest, call: Invocation) -> CompletionResponse | Stream:
        """OpenAI's (legacy) text completion."""
        self._model_named(request.model)
        prompt = self.engine.prepare_text(request.prompt_text())
        run = self.engine.generate(
            prompt, self._sampling(request, request.max_tokens, "max_tokens"), call.deadline
        )
        ident, created, alias = f"cmpl-{uuid.uuid4().hex}", int(time.time()), self.settings.alias
        if not request.stream:
            gen = run.finish()
            self._log("/v1/completions", gen, streamed=False)
            finish, cut = _openai_finish(gen)
            return CompletionResponse(
                id=ident,
                created=created,
                model=alias,
                choices=[CompletionChoice(text=gen.text, finish_reason=finish, deadline_reached=cut)],
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )
        head = {"id": ident, "object": "text_completion", "created": created, "model": alias}

        def events() -> Iterator[bytes]:
            for piece in run:
                choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": None}
                yield sse({**head, "choices": [choice]})
            gen = run.result
            assert gen is not None
            self._log("/v1/completions", gen, streamed=True)
            finish, cut = _openai_finish(gen)
            choice = {
                "text": "",
                "index": 0,
                "logprobs": None,
                "finish_reason": finish,
                "deadline_reached": cut,
            }
            yield sse({**head, "choices": [choice], "timings": _dump(self._timings(gen, call))})
            if request.stream_options is not None and request.stream_options.include_usage:
                yield sse({**head, "choices": [], "usage": _dump(_usage(gen))})
            yield SSE_DONE

        return self._stream(events(), OPENAI, run)

    def chat_completions(
        self, request: ChatCompletionRequest, call: Invocation
    ) -> ChatCompletionResponse | Stream:
        """OpenAI's chat completion, with the model's own chat template."""
        self._model_named(request.model)
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        params = self._sampling(request, request.requested_tokens(), param)
        prompt = self.engine.prepare_chat(_chat_messages(request.messages))
        run = self.engine.generate(prompt, params, call.deadline)
        ident, created, alias = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.settings.alias
        if not request.stream:
            gen = run.finish()
            self._log("/v1/chat/completions", gen, streamed=False)
            finish, cut = _openai_finish(gen)
            return ChatCompletionResponse(
                id=ident,
                created=created,
                model=alias,
                choices=[
                    ChatChoice(
                        message=AssistantMessage(content=gen.text), finish_reason=finish, deadline_reached=cut
                    )
                ],
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )
        head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": alias}

        def chunk(delta: Mapping[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            return sse({**head, "choices": [choice], **extra})

        def events() -> Iterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for piece in run:
                yield chunk({"content": piece})
            gen = run.result
            assert gen is not None
            self._log("/v1/chat/completions", gen, streamed=True)
            finish, cut = _openai_finish(gen)
            last = {
                "index": 0,
                "delta": {},
                "logprobs": None,
                "finish_reason": finish,
                "deadline_reached": cut,
            }
            yield sse({**head, "choices": [last], "timings": _dump(self._timings(gen, call))})
            if request.stream_options is not None and request.stream_options.include_usage:
                yield sse({**head, "choices": [], "usage": _dump(_usage(gen))})
            yield SSE_DONE

        return self._stream(events(), OPENAI, run)

    # ------------------------------------------------------------------ other routes

    def models(self, call: Invocation) -> ModelList:
        """The model this function serves (OpenAI's model list)."""
        card = ModelCard(id=self.settings.alias, created=self.created, owned_by=self.settings.owner)
        return ModelList(data=[card])

    def health(self, call: Invocation) -> HealthResponse:
        """Liveness: answers without the API key and without touching the model."""
        return HealthResponse(model=self.settings.alias)

    def tokenize(self, request: TokenizeRequest, call: Invocation) -> TokenizeResponse:
        """Token ids of a text (llama.cpp server), optionally with each token's text."""
        tokens = self.engine.tokenize(
            request.content, add_special=request.add_special, parse_special=request.parse_special
        )
        if not request.with_pieces:
            return TokenizeResponse(tokens=tokens)
        limit = self.app.max_response_bytes
        pieces = []
        for token, raw in zip(tokens, self.engine.pieces(tokens, limit_bytes=limit), strict=True):
            try:
                piece: str | list[int] = raw.decode("utf-8")
            except UnicodeDecodeError:
                piece = list(raw)
            pieces.append(TokenPiece(id=token, piece=piece))
        return TokenizeResponse(tokens=pieces)

    def detokenize(self, request: DetokenizeRequest, call: Invocation) -> DetokenizeResponse:
        """The text of token ids (llama.cpp server): their pieces, concatenated."""
        pieces = self.engine.pieces(request.tokens, limit_bytes=self.app.max_response_bytes)
        return DetokenizeResponse(content=b"".join(pieces).decode("utf-8", errors="replace"))

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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
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
from llama_app.chat import ChatTurn, Content, TurnResult
from llama_app.engine import Engine, Generation, GenerationRun, SamplingParams, TokenLogprob
from llama_app.schemas import (
    AllowedToolsChoice,
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChoiceLogprobs,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    DirectRequest,
    DirectResponse,
    DirectStreamEvent,
    FunctionCallOut,
    HealthResponse,
    NamedToolChoice,
    OpenAIFinishReason,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    Sampling,
    Timings,
    TokenizeRequest,
    TokenizeResponse,
    TokenLogprobOut,
    TokenPiece,
    ToolCallOut,
    TopLogprob,
    Usage,
)
from llama_app.settings import LlamaSettings
from llama_app.structured import JSON_OBJECT_SCHEMA, JsonSchemaGrammar, schema_to_grammar
from llama_app.tools import (
    ArgumentsEvent,
    CallStart,
    ParsedCall,
    Tool,
    ToolPlan,
    answer_or_call_grammar,
    calls_grammar,
    render_messages,
)

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


def _chat_messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as chat templates read them: content as text (None for a bare tool-call message),
    calls with decoded arguments. Templates know system/user/assistant/tool; OpenAI's newer
    "developer" role is a system message."""
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {
            "role": "system" if message.role == "developer" else message.role,
            "content": message.text() if message.content is not None else None,
        }
        if message.tool_calls:
            item["tool_calls"] = [
                {
                    "id": tool_call.id,
                    "type": "function",
                    "function": {
                        "name": tool_call.function.name,
                        "arguments": json.loads(tool_call.function.arguments),
                    },
                }
                for tool_call in message.tool_calls
            ]
        if message.tool_call_id is not None:
            item["tool_call_id"] = message.tool_call_id
        out.append(item)
    return out


def _tool_plan(request: ChatCompletionRequest) -> ToolPlan | None:
    """The request's tools and tool_choice, checked: names unique, choices among the tools."""
    if not request.tools:
        return None
    tools: list[Tool] = []
    for index, definition in enumerate(request.tools):
        function = definition.function
        if any(tool.name == function.name for tool in tools):
            raise InvalidRequest(
                f"tools[{index}].function.name: {function.name!r} is given twice",
                param=f"tools[{index}].function.name",
            )
        parameters = (
            function.parameters if function.parameters is not None else {"type": "object", "properties": {}}
        )
        if parameters.get("type", "object") != "object":
            raise InvalidRequest(
                f"tools[{index}].function.parameters must be a JSON Schema of type object",
                param=f"tools[{index}].function.parameters",
            )
        tools.append(Tool(function.name, function.description, {"type": "object", **parameters}))
    by_name = {tool.name: tool for tool in tools}

    def named(name: str, param: str) -> Tool:
        if name not in by_name:
            raise InvalidRequest(f"{param}: {name!r} is not one of the tools", param=param)
        return by_name[name]

    choice = request.tool_choice if request.tool_choice is not None else "auto"
    if isinstance(choice, NamedToolChoice):
        # A function forced by name is called once, as OpenAI does.
        return ToolPlan(tools, [named(choice.function.name, "tool_choice.function.name")], "required", False)
    if isinstance(choice, AllowedToolsChoice):
        allowed = [
            named(item.function.name, f"tool_choice.allowed_tools.tools[{i}].function.name")
            for i, item in enumerate(choice.allowed_tools.tools)
        ]
        return ToolPlan(tools, allowed, choice.allowed_tools.mode, request.parallel_tool_calls)
    return ToolPlan(tools, tools, choice, request.parallel_tool_calls)


def _chat_logprobs(entries: Sequence[TokenLogprob], top: int) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprobOut(
                token=entry.token,
                logprob=entry.logprob,
                bytes=entry.bytes,
                top_logprobs=[TopLogprob(token=t, bytes=b, logprob=lp) for t, b, lp in entry.top[:top]],
            )
            for entry in entries
        ]
    )


def _completion_logprobs(entries: Sequence[TokenLogprob], offset: int) -> CompletionLogprobs:
    """OpenAI's legacy shape; ``offset``: characters before the first of these tokens (prompt included)."""
    offsets = []
    for entry in entries:
        offsets.append(offset)
        offset += len(entry.token)
    return CompletionLogprobs(
        tokens=[entry.token for entry in entries],
        token_logprobs=[entry.logprob for entry in entries],
        top_logprobs=[{t: lp for t, _, lp in reversed(entry.top)} for entry in entries],
        text_offset=offsets,
    )


def _tool_calls_out(calls: Sequence[ParsedCall]) -> list[ToolCallOut] | None:
    if not calls:
        return None
    return [ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments)) for c in calls]


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

    def _log(self, route: str, gen: Generation, *, streamed: bool, tool_calls: int = 0) -> None:
        self.app.logger.info(
            "generated",
            extra={
                "route": route,
                "streamed": streamed,
                "tool_calls": tool_calls,
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": gen.completion_tokens,
                "finish_reason": gen.finish_reason,
                "prompt_ms": round(gen.timings.prompt_ms, 1),
                "predicted_ms": round(gen.timings.predicted_ms, 1),
                "tokens_per_second": round(gen.timings.predicted_per_second or 0.0, 2),
            },
        )
        self.app.metrics.generation(
            prompt_tokens=gen.prompt_tokens,
            completion_tokens=gen.completion_tokens,
            time_to_first_token_ms=gen.timings.prompt_ms,
            tokens_per_second=gen.timings.predicted_per_second,
            finish_reason=gen.finish_reason,
        )

    def _constrained(
        self, params: SamplingParams, json_schema: dict[str, Any] | None, grammar: str | None, param: str
    ) -> SamplingParams:
        """``params`` with llama.cpp's ``json_schema`` or ``grammar`` fields applied (checked, compiled)."""
        if json_schema is not None:
            text = schema_to_grammar(json_schema, param="json_schema")
            return replace(
                params, grammar=self.engine.compile_grammar(text, param="json_schema"), special=True
            )
        if grammar is not None:
            return replace(
                params, grammar=self.engine.compile_grammar(grammar, param="grammar"), special=True
            )
        return params

    def _stream(self, events: Iterator[bytes], family: ErrorFamily, run: GenerationRun | ChatTurn) -> Stream:
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
        params = self._constrained(params, request.json_schema, request.grammar, param)
        if request.messages is not None:
            prompt = self.engine.prepare_chat(_chat_messages(request.messages))
        else:
            prompt = self.engine.prepare_text(request.prompt or "")
        run = self.engine.generate(prompt, params, call.deadline)
        route = call.label
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
        params = self._sampling(request, request.max_tokens, "max_tokens")
        params = self._constrained(params, request.json_schema, request.grammar, "max_tokens")
        if request.logprobs is not None:
            params = replace(params, logprobs=request.logprobs)
        prompt_text = request.prompt_text()
        prompt = self.engine.prepare_text(prompt_text)
        run = self.engine.generate(prompt, params, call.deadline)
        ident, created, alias = f"cmpl-{uuid.uuid4().hex}", int(time.time()), self.settings.alias
        want_logprobs = request.logprobs is not None
        if not request.stream:
            gen = run.finish()
            self._log("/v1/completions", gen, streamed=False)
            finish, cut = _openai_finish(gen)
            logprobs = _completion_logprobs(gen.logprobs, len(prompt_text)) if want_logprobs else None
            return CompletionResponse(
                id=ident,
                created=created,
                model=alias,
                choices=[
                    CompletionChoice(
                        text=gen.text, logprobs=logprobs, finish_reason=finish, deadline_reached=cut
                    )
                ],
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )
        head = {"id": ident, "object": "text_completion", "created": created, "model": alias}

        def events() -> Iterator[bytes]:
            offset = len(prompt_text)
            for piece in run:
                logprobs = None
                if want_logprobs:
                    entries = run.take_logprobs()
                    logprobs = _dump(_completion_logprobs(entries, offset))
                    offset += sum(len(entry.token) for entry in entries)
                choice = {"text": piece, "index": 0, "logprobs": logprobs, "finish_reason": None}
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

    def _chat_turn(self, request: ChatCompletionRequest, call: Invocation) -> ChatTurn:
        """Check the request's tools and response format, render the prompt, set up the turn."""
        param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
        params = self._sampling(request, request.requested_tokens(), param)
        if request.logprobs:
            params = replace(params, logprobs=request.top_logprobs or 0)
        plan = _tool_plan(request)
        active = plan is not None and plan.active
        schema: Any = None
        if isinstance(request.response_format, ResponseFormatJsonSchema):
            schema = request.response_format.json_schema.schema_
        elif isinstance(request.response_format, ResponseFormatJsonObject):
            schema = JSON_OBJECT_SCHEMA
        calls = None
        if active:
            assert plan is not None
            text = calls_grammar(plan)
            calls = replace(
                params,
                grammar=self.engine.compile_grammar(text, param="tools"),
                stop=(),
                logprobs=None,
                special=True,
            )
        if schema is not None and (not active or (plan is not None and plan.mode == "auto")):
            where = "response_format.json_schema.schema"
            if active:
                converter = JsonSchemaGrammar()
                converter.add(schema, "answer", where)
                text = answer_or_call_grammar(converter, param=where)
            else:
                text = schema_to_grammar(schema, param=where)
            params = replace(params, grammar=self.engine.compile_grammar(text, param=where), special=True)
        messages, variables = render_messages(
            _chat_messages(request.messages), plan, template_tools=self.engine.template_tools
        )
        prompt = self.engine.prepare_chat(messages, **variables)
        return ChatTurn(self.engine, prompt, params, call.deadline, plan, calls)

    def chat_completions(
        self, request: ChatCompletionRequest, call: Invocation
    ) -> ChatCompletionResponse | Stream:
        """OpenAI's chat completion, with the model's own chat template."""
        self._model_named(request.model)
        turn = self._chat_turn(request, call)
        ident, created, alias = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self.settings.alias
        top = request.top_logprobs or 0
        if not request.stream:
            result = turn.finish()
            gen = result.generation
            self._log("/v1/chat/completions", gen, streamed=False, tool_calls=len(result.calls))
            message = AssistantMessage(
                content=result.content if result.content.strip() or not result.calls else None,
                tool_calls=_tool_calls_out(result.calls),
            )
            return ChatCompletionResponse(
                id=ident,
                created=created,
                model=alias,
                choices=[
                    ChatChoice(
                        message=message,
                        logprobs=_chat_logprobs(gen.logprobs, top) if request.logprobs else None,
                        finish_reason=result.finish,
                        deadline_reached=result.deadline_reached,
                    )
                ],
                usage=_usage(gen),
                timings=self._timings(gen, call),
            )
        head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": alias}

        def chunk(delta: Mapping[str, Any], logprobs: Any = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}
            return sse({**head, "choices": [choice]})

        def events() -> Iterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            for event in turn.events():
                if isinstance(event, Content):
                    logprobs = _dump(_chat_logprobs(event.logprobs, top)) if request.logprobs else None
                    yield chunk({"content": event.text}, logprobs)
                elif isinstance(event, CallStart):
                    start = {
                        "index": event.call.index,
                        "id": event.call.id,
                        "type": "function",
                        "function": {"name": event.call.name, "arguments": ""},
                    }
                    yield chunk({"tool_calls": [start]})
                elif isinstance(event, ArgumentsEvent):
                    fragment = {"index": event.index, "function": {"arguments": event.fragment}}
                    yield chunk({"tool_calls": [fragment]})
            result: TurnResult | None = turn.result
            assert result is not None
            gen = result.generation
            self._log("/v1/chat/completions", gen, streamed=True, tool_calls=len(result.calls))
            last = {
                "index": 0,
                "delta": {},
                "logprobs": None,
                "finish_reason": result.finish,
                "deadline_reached": result.deadline_reached,
            }
            yield sse({**head, "choices": [last], "timings": _dump(self._timings(gen, call))})
            if request.stream_options is not None and request.stream_options.include_usage:
                yield sse({**head, "choices": [], "usage": _dump(_usage(gen))})
            yield SSE_DONE

        return self._stream(events(), OPENAI, turn)

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

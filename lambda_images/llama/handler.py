"""Lambda entry point of the llama.cpp generator.

Init (import) reads the settings, loads the GGUF model once and builds the
routes; every invocation reuses them. Two ways in, one core:

* ``aws lambda invoke`` passes the llama.cpp-style payload itself
  (``{"prompt": "llamas are", "n-generate": 1}``); the answer, or a structured
  error, is the returned JSON.
* A Function URL passes a payload-format-2.0 HTTP event, routed by powertools'
  ``LambdaFunctionUrlResolver``: ``POST /`` (the same payload),
  ``POST /v1/completions``, ``POST /v1/chat/completions``, ``GET /v1/models``,
  ``GET /health``, ``POST /tokenize`` and ``POST /detokenize``.

Errors: ``/v1/*`` routes answer in OpenAI's error shape, everything else in
llama.cpp server's ``{"error": {"code", "type", "message"}}``; one function
(``error_response``) turns an ApiError into an HTTP response.
"""

# The init clock starts before the heavy imports, so the imports below follow it.
# ruff: noqa: E402
from __future__ import annotations

import time

_INIT_STARTED = time.perf_counter()

import base64
import binascii
import json
import os
import uuid
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from pydantic import BaseModel

from lambda_common.http import (
    ApiError,
    ApiKeyGuard,
    decode_json_body,
    is_function_url_event,
    parse_model,
    route_error,
)
from lambda_common.runtime import resolve_threads
from llama_app.engine import Deadline, Engine, Generation, SamplingParams
from llama_app.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    DetokenizeResponse,
    DirectRequest,
    DirectResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    OpenAIFinishReason,
    Sampling,
    Timings,
    TokenizeRequest,
    TokenizeResponse,
    TokenPiece,
    Usage,
)
from llama_app.settings import LlamaSettings

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "llama-generator"))

settings = LlamaSettings()
N_THREADS = resolve_threads(settings.n_threads)
engine = Engine.load(settings, N_THREADS)
guard = ApiKeyGuard.from_environment()
MODEL_CREATED = int(settings.model_path.stat().st_mtime)
INIT_MS = (time.perf_counter() - _INIT_STARTED) * 1000.0
logger.info(
    "model loaded",
    extra={
        "model": settings.alias,
        "n_ctx": engine.n_ctx,
        "n_threads": N_THREADS,
        "n_threads_batch": settings.n_threads_batch or N_THREADS,
        "init_ms": round(INIT_MS, 1),
        "api_key_guard": guard.enabled,
    },
)

ROUTES: dict[str, frozenset[str]] = {
    "/": frozenset({"POST"}),
    "/v1/completions": frozenset({"POST"}),
    "/v1/chat/completions": frozenset({"POST"}),
    "/v1/models": frozenset({"GET"}),
    "/health": frozenset({"GET"}),
    "/tokenize": frozenset({"POST"}),
    "/detokenize": frozenset({"POST"}),
}
PUBLIC_ROUTES = {("GET", "/health")}

_cold = True


def _take_cold_start() -> bool:
    """True for the first invocation of this environment (the one that paid the init)."""
    global _cold
    cold, _cold = _cold, False
    return cold


# ------------------------------------------------------------------ errors

_LLAMA_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    500: "server_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


def llama_error_body(err: ApiError) -> dict[str, Any]:
    """llama.cpp server's error envelope: ``code`` is the HTTP status."""
    if err.code == "context_length_exceeded":
        kind = "exceed_context_size_error"
    else:
        kind = _LLAMA_ERROR_TYPES.get(
            err.status, "server_error" if err.status >= 500 else "invalid_request_error"
        )
    body: dict[str, Any] = {"code": err.status, "type": kind, "message": err.message}
    if err.param is not None:
        body["param"] = err.param
    return {"error": body}


def _is_openai_path(path: str) -> bool:
    return path.startswith("/v1/")


def error_response(err: ApiError, path: str, headers: Mapping[str, str] | None = None) -> Response[str]:
    """The one place an ApiError becomes an HTTP response, in the shape the route's clients parse."""
    body = err.openai_body() if _is_openai_path(path) else llama_error_body(err)
    extra = dict(headers or {})
    if err.status == 401:
        extra.setdefault("WWW-Authenticate", "Bearer")
    log = logger.error if err.status >= 500 else logger.info
    log("request refused", extra={"status": err.status, "error_code": err.code, "path": path})
    return Response(
        status_code=err.status, content_type="application/json", body=json.dumps(body), headers=extra
    )


# ------------------------------------------------------------------ shared steps


def _model_named(name: str | None) -> None:
    """Accept no model name or this function's alias; anything else is a 404, never a fallback."""
    if name is not None and name != settings.alias:
        raise ApiError(
            404,
            f"the model `{name}` does not exist here; this function serves `{settings.alias}`",
            param="model",
            code="model_not_found",
        )


def _sampling(request: Sampling, requested: int | None, param: str) -> SamplingParams:
    max_tokens = requested if requested is not None else settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        raise ApiError(
            400,
            f"{param}: {max_tokens} tokens asked; MAX_TOKENS_LIMIT is {settings.max_tokens_limit}",
            param=param,
            code="invalid_value",
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


def _deadline(context: Any) -> Deadline:
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return Deadline.none()
    deadline = Deadline(float(remaining()), settings.deadline_margin_ms)
    left = deadline.remaining_ms()
    if left is not None and left <= 0:
        raise ApiError(
            503,
            f"the invocation has less than DEADLINE_MARGIN_MS ({settings.deadline_margin_ms} ms) left; "
            "nothing was generated (raise the function timeout)",
            type="server_error",
            code="deadline_too_close",
        )
    return deadline


def _chat_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    # Chat templates know system/user/assistant; OpenAI's newer "developer" role is a system message.
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in messages]


def _usage(gen: Generation) -> Usage:
    return Usage(
        prompt_tokens=gen.prompt_tokens,
        completion_tokens=gen.completion_tokens,
        total_tokens=gen.prompt_tokens + gen.completion_tokens,
    )


def _timings(gen: Generation, cold: bool) -> Timings:
    t = gen.timings
    return Timings(
        cold_start=cold,
        init_ms=round(INIT_MS, 1) if cold else None,
        prompt_n=gen.prompt_tokens,
        prompt_ms=round(t.prompt_ms, 2),
        prompt_per_second=round(gen.prompt_tokens / t.prompt_ms * 1000.0, 2) if t.prompt_ms > 0 else None,
        predicted_n=gen.completion_tokens,
        predicted_ms=round(t.predicted_ms, 2),
        predicted_per_second=round(t.predicted_per_second, 2) if t.predicted_per_second else None,
        total_ms=round(t.total_ms, 2),
    )


def _log_generation(route: str, gen: Generation) -> None:
    logger.info(
        "generated",
        extra={
            "route": route,
            "prompt_tokens": gen.prompt_tokens,
            "completion_tokens": gen.completion_tokens,
            "finish_reason": gen.finish_reason,
            "prompt_ms": round(gen.timings.prompt_ms, 1),
            "predicted_ms": round(gen.timings.predicted_ms, 1),
            "tokens_per_second": round(gen.timings.predicted_per_second or 0.0, 2),
        },
    )


def _openai_finish(gen: Generation) -> tuple[OpenAIFinishReason, bool]:
    """OpenAI clients know stop and length: a deadline stop is length plus ``deadline_reached``."""
    if gen.finish_reason == "deadline":
        return "length", True
    return gen.finish_reason, False


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


# ------------------------------------------------------------------ the core of each route


def generate_direct(request: DirectRequest, deadline: Deadline, cold: bool) -> DirectResponse:
    """The llama.cpp-style payload, for direct invokes and ``POST /``."""
    _model_named(request.model)
    param = "n-generate" if request.n_generate is not None else "max_tokens"
    params = _sampling(request, request.requested_tokens(), param)
    if request.messages is not None:
        gen = engine.chat(_chat_messages(request.messages), params, deadline)
    else:
        gen = engine.complete(request.prompt or "", params, deadline)
    _log_generation("direct", gen)
    return DirectResponse(
        model=settings.alias,
        text=gen.text,
        finish_reason=gen.finish_reason,
        usage=_usage(gen),
        timings=_timings(gen, cold),
    )


def _sse(events: list[dict[str, Any]]) -> str:
    return "".join(f"data: {json.dumps(event)}\n\n" for event in events) + "data: [DONE]\n\n"


def _chunk_json(chunk: ChatCompletionChunk) -> dict[str, Any]:
    data = chunk.model_dump(mode="json", exclude_none=True)
    for choice in data["choices"]:  # OpenAI sends these two as explicit nulls
        choice.setdefault("finish_reason", None)
        choice.setdefault("logprobs", None)
    return data


def completion(request: CompletionRequest, deadline: Deadline, cold: bool) -> Response[str]:
    _model_named(request.model)
    gen = engine.complete(
        request.prompt_text(), _sampling(request, request.max_tokens, "max_tokens"), deadline
    )
    _log_generation("/v1/completions", gen)
    finish, cut = _openai_finish(gen)
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    if not request.stream:
        body = CompletionResponse(
            id=ident,
            created=created,
            model=settings.alias,
            choices=[CompletionChoice(text=gen.text, finish_reason=finish, deadline_reached=cut)],
            usage=_usage(gen),
            timings=_timings(gen, cold),
        )
        return _json_response(_dump(body))
    events = [
        _dump(CompletionResponse(id=ident, created=created, model=settings.alias, choices=[c]))
        for c in (
            CompletionChoice(text=gen.text, finish_reason=None),
            CompletionChoice(text="", finish_reason=finish, deadline_reached=cut),
        )
    ]
    events[-1]["timings"] = _dump(_timings(gen, cold))
    if request.stream_options is not None and request.stream_options.include_usage:
        usage = CompletionResponse(
            id=ident, created=created, model=settings.alias, choices=[], usage=_usage(gen)
        )
        events.append(_dump(usage))
    for event in events:
        if event.get("usage") is None:
            event.pop("usage", None)
        if event.get("timings") is None:
            event.pop("timings", None)
    return _sse_response(_sse(events))


def chat_completion(request: ChatCompletionRequest, deadline: Deadline, cold: bool) -> Response[str]:
    _model_named(request.model)
    param = "max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens"
    params = _sampling(request, request.requested_tokens(), param)
    gen = engine.chat(_chat_messages(request.messages), params, deadline)
    _log_generation("/v1/chat/completions", gen)
    finish, cut = _openai_finish(gen)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    if not request.stream:
        body = ChatCompletionResponse(
            id=ident,
            created=created,
            model=settings.alias,
            choices=[
                ChatChoice(
                    message=AssistantMessage(content=gen.text), finish_reason=finish, deadline_reached=cut
                )
            ],
            usage=_usage(gen),
            timings=_timings(gen, cold),
        )
        return _json_response(_dump(body))

    def chunk(choices: list[ChunkChoice], **extra: Any) -> dict[str, Any]:
        return _chunk_json(
            ChatCompletionChunk(id=ident, created=created, model=settings.alias, choices=choices, **extra)
        )

    # Buffered: the whole answer is ready, so it goes out as one content chunk.
    events = [chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])]
    if gen.text:
        events.append(chunk([ChunkChoice(delta=ChunkDelta(content=gen.text))]))
    events.append(
        chunk(
            [ChunkChoice(delta=ChunkDelta(), finish_reason=finish, deadline_reached=cut)],
            timings=_timings(gen, cold),
        )
    )
    if request.stream_options is not None and request.stream_options.include_usage:
        events.append(chunk([], usage=_usage(gen)))
    return _sse_response(_sse(events))


def tokenize(request: TokenizeRequest) -> TokenizeResponse:
    tokens = engine.tokenize(
        request.content, add_special=request.add_special, parse_special=request.parse_special
    )
    if not request.with_pieces:
        return TokenizeResponse(tokens=tokens)
    pieces = []
    for token in tokens:
        raw = engine.piece(token)
        try:
            piece: str | list[int] = raw.decode("utf-8")
        except UnicodeDecodeError:
            piece = list(raw)
        pieces.append(TokenPiece(id=token, piece=piece))
    return TokenizeResponse(tokens=pieces)


# ------------------------------------------------------------------ Function URL routes

app = LambdaFunctionUrlResolver()


def _json_response(body: Mapping[str, Any], status: int = 200) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body))


def _sse_response(body: str) -> Response[str]:
    return Response(
        status_code=200,
        content_type="text/event-stream",
        body=body,
        headers={"Cache-Control": "no-cache"},
    )


def _request_body() -> Any:
    """The decoded JSON body of the current URL request (base64 bodies included)."""
    event = app.current_event
    raw: str | bytes | None = event.body
    if raw and event.is_base64_encoded:
        try:
            raw = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, "request body is marked base64 but is not valid base64", code="invalid_body"
            ) from None
    return decode_json_body(raw, max_bytes=settings.max_body_bytes)


def _url_deadline() -> Deadline:
    return _deadline(app.lambda_context)


def _cold_flag() -> bool:
    return bool(app.context.get("cold_start", False))


def _require_api_key(app: LambdaFunctionUrlResolver, next_middleware: NextMiddleware) -> Response[Any]:
    event = app.current_event
    if (event.request_context.http.method, event.path) not in PUBLIC_ROUTES and not guard.authorized(
        event.headers or {}
    ):
        raise ApiError(
            401,
            "missing or wrong API key: send the header `Authorization: Bearer <key>`",
            code="invalid_api_key",
        )
    return next_middleware(app)


app.use(middlewares=[_require_api_key])


@app.post("/")
def _post_root() -> Response[str]:
    request = parse_model(DirectRequest, _request_body())
    return _json_response(_dump(generate_direct(request, _url_deadline(), _cold_flag())))


@app.post("/v1/completions")
def _post_completions() -> Response[str]:
    return completion(parse_model(CompletionRequest, _request_body()), _url_deadline(), _cold_flag())


@app.post("/v1/chat/completions")
def _post_chat_completions() -> Response[str]:
    return chat_completion(parse_model(ChatCompletionRequest, _request_body()), _url_deadline(), _cold_flag())


@app.get("/v1/models")
def _get_models() -> Response[str]:
    card = ModelCard(id=settings.alias, created=MODEL_CREATED, owned_by=settings.owner)
    return _json_response(_dump(ModelList(data=[card])))


@app.get("/health")
def _get_health() -> Response[str]:
    return _json_response(_dump(HealthResponse(model=settings.alias)))


@app.post("/tokenize")
def _post_tokenize() -> Response[str]:
    return _json_response(_dump(tokenize(parse_model(TokenizeRequest, _request_body()))))


@app.post("/detokenize")
def _post_detokenize() -> Response[str]:
    request = parse_model(DetokenizeRequest, _request_body())
    return _json_response(_dump(DetokenizeResponse(content=engine.detokenize(request.tokens))))


@app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
def _on_api_error(err: ApiError) -> Response[str]:
    return error_response(err, app.current_event.path)


@app.not_found
def _on_not_found(_: NotFoundError) -> Response[str]:
    event = app.current_event
    method, path = event.request_context.http.method, event.path
    err = route_error(path, method, ROUTES)
    allowed = ROUTES.get(path)
    headers = {"Allow": ", ".join(sorted(allowed))} if err.status == 405 and allowed else None
    return error_response(err, path, headers)


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def _on_unexpected(exc: Exception) -> Response[str]:
    logger.exception("unexpected error")
    err = ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal_error")
    return error_response(err, app.current_event.path)


# ------------------------------------------------------------------ entry point


def _direct_invoke(event: Any, context: Any, cold: bool) -> dict[str, Any]:
    try:
        request = parse_model(DirectRequest, event)
        return _dump(generate_direct(request, _deadline(context), cold))
    except ApiError as err:
        log = logger.error if err.status >= 500 else logger.info
        log("request refused", extra={"status": err.status, "error_code": err.code, "path": "direct"})
        return llama_error_body(err)
    except Exception as exc:
        logger.exception("unexpected error")
        return llama_error_body(
            ApiError(500, f"internal error: {type(exc).__name__}", type="server_error", code="internal_error")
        )


def _without_trailing_slash(event: dict[str, Any]) -> dict[str, Any]:
    """``/v1/models/`` is ``/v1/models``, as clients that join base URLs loosely expect."""
    path = event.get("rawPath", "")
    if len(path) <= 1 or not path.endswith("/"):
        return event
    http = {**event["requestContext"]["http"], "path": path.rstrip("/") or "/"}
    return {
        **event,
        "rawPath": path.rstrip("/") or "/",
        "requestContext": {**event["requestContext"], "http": http},
    }


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    cold = _take_cold_start()
    logger.append_keys(request_id=getattr(context, "aws_request_id", None), cold_start=cold)
    if is_function_url_event(event):
        app.append_context(cold_start=cold)  # type: ignore[no-untyped-call]
        return app.resolve(_without_trailing_slash(event), context)
    return _direct_invoke(event, context, cold)

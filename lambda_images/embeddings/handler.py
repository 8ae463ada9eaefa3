"""The embedding function: TEI- and OpenAI-compatible, for Function URLs and direct invokes.

Everything heavy happens here at import, in Lambda's init phase: settings,
the backend (ONNX Runtime by default, no torch) and the model. Then:

- Function URL events (payload format 2.0) go to a powertools resolver:
  POST / and POST /embed (TEI), POST /v1/embeddings (OpenAI), POST /tokenize,
  GET /info, GET /health. Errors come back in the route's own shape.
- Anything else is a direct ``aws lambda invoke`` payload: ``{"inputs": ...}``
  answers as TEI's /embed (a list of vectors), ``{"input": ..., "model": ...}``
  as OpenAI's /v1/embeddings. Errors are returned as a body, never raised.

docs/embeddings.md describes the API, the limits and the configuration.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from typing import Any, TypeVar

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from pydantic import BaseModel

from embedder.backends import load_backend
from embedder.prompts import PromptTable
from embedder.schemas import EmbedRequest, OpenAIEmbeddingsRequest, TokenizeRequest
from embedder.service import (
    EMPTY,
    Embedded,
    EmbeddingService,
    EmbedOptions,
    ResponseShape,
    as_base64,
    as_json_floats,
)
from embedder.settings import Settings
from lambda_common.http import (
    ApiError,
    ApiKeyGuard,
    decode_json_body,
    is_function_url_event,
    parse_model,
    route_error,
)
from lambda_common.runtime import resolve_threads

JSON = "application/json"
ROUTES: dict[str, frozenset[str]] = {
    "/": frozenset({"POST"}),
    "/embed": frozenset({"POST"}),
    "/v1/embeddings": frozenset({"POST"}),
    "/tokenize": frozenset({"POST"}),
    "/info": frozenset({"GET"}),
    "/health": frozenset({"GET"}),
}
TEI_ERROR_TYPES = {
    EMPTY: "Empty",
    "backend": "Backend",
    "invalid_api_key": "Unauthorized",
    "not_found": "NotFound",
    "method_not_allowed": "MethodNotAllowed",
}
# Bytes around each vector and around the whole response, for the size estimate.
TEI_SHAPE = {"per_item": 8, "fixed": 2048}
OPENAI_SHAPE = {"per_item": 96, "fixed": 2048}

ModelT = TypeVar("ModelT", bound=BaseModel)

LOAD_STARTED = time.perf_counter()
logger = Logger()
settings = Settings()  # type: ignore[call-arg]  # every field comes from the environment or its default
threads = resolve_threads(settings.n_threads)
guard = ApiKeyGuard.from_environment()
backend = load_backend(
    settings.backend,
    settings.model_dir,
    threads=threads,
    max_batch_tokens=settings.batch_tokens(threads),
    batch_size=settings.batch_size,
)
MODEL_ID = settings.model_id or backend.info.model_id or settings.model_dir.name
service = EmbeddingService(
    backend,
    settings,
    MODEL_ID,
    PromptTable.resolve(
        MODEL_ID,
        declared=backend.info.declared_prompts,
        declared_default=backend.info.declared_default_prompt,
        environment=settings.prompts,
        environment_default=settings.default_prompt_name,
    ),
)
COMPUTE_TYPE = f"cpu+{backend.name}"
logger.info(
    "model loaded",
    extra={
        "model_id": MODEL_ID,
        "backend": backend.name,
        "threads": threads,
        "dimensions": backend.info.dimension,
        "max_input_length": backend.info.max_seq_length,
        "prompts": sorted(service.prompts.prompts),
        "default_prompt_name": service.prompts.default_name,
        "api_key": guard.enabled,
        "load_ms": round((time.perf_counter() - LOAD_STARTED) * 1000),
    },
)

app = LambdaFunctionUrlResolver()


# -- shapes ---------------------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _is_openai(path: str) -> bool:
    return path.startswith("/v1/")


def tei_error(exc: ApiError) -> dict[str, Any]:
    """TEI's error body: {"error": message, "error_type": Validation|Empty|Tokenizer|Backend|...}."""
    default = "Backend" if exc.status >= 500 else "Validation"
    return {"error": exc.message, "error_type": TEI_ERROR_TYPES.get(exc.code or "", default)}


def _error_body(exc: ApiError, openai: bool) -> dict[str, Any]:
    if openai:
        if exc.status >= 500:
            exc.type = "server_error"
        return exc.openai_body()
    return tei_error(exc)


def _log_refusal(exc: ApiError, where: str) -> None:
    logger.info("request refused", extra={"route": where, "status": exc.status, "code": exc.code})


def _check_size(body: str) -> str:
    """A last guard: the estimate before compute should already have refused this."""
    size = len(body.encode())
    if size > settings.max_response_bytes:
        raise ApiError(
            413,
            f"the response would be {size} bytes, over the {settings.max_response_bytes}-byte "
            "limit of a Lambda response; send fewer inputs per request",
            code="too_large",
        )
    return body


def _parse(model: type[ModelT], payload: Any, *, status: int) -> ModelT:
    """parse_model, with the status the route family uses for invalid fields (TEI 422, OpenAI 400)."""
    try:
        return parse_model(model, payload)
    except ApiError as exc:
        if exc.code == "invalid_value":
            exc.status = status
        raise


# -- the operations, shared by URL routes and direct invokes ---------------------------


def embed_tei(request: EmbedRequest) -> Embedded:
    options = EmbedOptions(
        normalize=request.normalize,
        truncate=settings.auto_truncate if request.truncate is None else request.truncate,
        truncation_direction=request.truncation_direction,
        prompt_name=request.prompt_name,
        dimensions=request.dimensions,
    )
    return service.embed(request.inputs, options, ResponseShape("float", **TEI_SHAPE))


def embed_openai(request: OpenAIEmbeddingsRequest) -> tuple[dict[str, Any], Embedded]:
    if not service.accepts_model(request.model):
        raise ApiError(
            404,
            f"the model `{request.model}` does not exist here; this function serves `{MODEL_ID}`",
            param="model",
            code="model_not_found",
        )
    options = EmbedOptions(
        normalize=True,
        truncate=settings.auto_truncate if request.truncate is None else request.truncate,
        prompt_name=request.prompt_name,
        dimensions=request.dimensions,
    )
    embedded = service.embed(request.input, options, ResponseShape(request.encoding_format, **OPENAI_SHAPE))
    if request.encoding_format == "base64":
        vectors: list[Any] = [as_base64(vector) for vector in embedded.vectors]
    else:
        vectors = as_json_floats(embedded.vectors)
    body = {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
        "model": MODEL_ID,
        "usage": {"prompt_tokens": embedded.tokens, "total_tokens": embedded.tokens},
    }
    return body, embedded


def _log_embedded(route: str, embedded: Embedded) -> None:
    logger.info(
        "embedded",
        extra={
            "route": route,
            "inputs": len(embedded.vectors),
            "tokens": embedded.tokens,
            "truncated": embedded.truncated,
            "tokenization_ms": round(embedded.tokenization_s * 1000, 2),
            "inference_ms": round(embedded.inference_s * 1000, 2),
            "total_ms": round(embedded.total_s * 1000, 2),
        },
    )


# -- Function URL routes -------------------------------------------------------------


def _request_json() -> Any:
    event = app.current_event
    body = event.body
    raw: str | bytes | None = body
    if body is not None and event.is_base64_encoded:
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                400, "the request body is marked base64 but is not valid base64", code="invalid_body"
            ) from None
    return decode_json_body(raw, max_bytes=settings.max_body_bytes)


def _json_response(payload: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response[str]:
    return Response(status_code=status, content_type=JSON, body=_check_size(_dumps(payload)), headers=headers)


@app.post("/")
@app.post("/embed")
def tei_embed() -> Response[str]:
    request = _parse(EmbedRequest, _request_json(), status=422)
    embedded = embed_tei(request)
    _log_embedded(app.current_event.path, embedded)
    return _json_response(as_json_floats(embedded.vectors), embedded.headers(COMPUTE_TYPE))


@app.post("/v1/embeddings")
def openai_embeddings() -> Response[str]:
    request = _parse(OpenAIEmbeddingsRequest, _request_json(), status=400)
    body, embedded = embed_openai(request)
    _log_embedded("/v1/embeddings", embedded)
    return _json_response(body, embedded.headers(COMPUTE_TYPE))


@app.post("/tokenize")
def tokenize() -> Response[str]:
    request = _parse(TokenizeRequest, _request_json(), status=422)
    tokens = service.tokenize(
        request.inputs, add_special_tokens=request.add_special_tokens, prompt_name=request.prompt_name
    )
    return _json_response([[token.__dict__ for token in row] for row in tokens])


@app.get("/info")
def info() -> Response[str]:
    return _json_response(service.describe(threads))


@app.get("/health")
def health() -> Response[str]:
    return _json_response({"status": "ok", "model_id": MODEL_ID, "backend": backend.name})


@app.not_found
def not_found(_: NotFoundError) -> Response[str]:
    event = app.current_event
    raise route_error(event.path, event.http_method.upper(), ROUTES)


@app.exception_handler(ApiError)  # type: ignore[untyped-decorator]
def api_error(exc: ApiError) -> Response[str]:
    path = app.current_event.path
    _log_refusal(exc, path)
    return Response(
        status_code=exc.status, content_type=JSON, body=_dumps(_error_body(exc, _is_openai(path)))
    )


@app.exception_handler(Exception)  # type: ignore[untyped-decorator]
def unexpected(exc: Exception) -> Response[str]:
    logger.exception("request failed")
    error = ApiError(500, "internal error while embedding; see the function's logs", type="server_error")
    return Response(
        status_code=500,
        content_type=JSON,
        body=_dumps(_error_body(error, _is_openai(app.current_event.path))),
    )


# -- entry point --------------------------------------------------------------------


def _unauthorized(event: Mapping[str, Any]) -> dict[str, Any]:
    path = str(event.get("rawPath") or "/")
    error = ApiError(
        401, "missing or wrong API key: send the header Authorization: Bearer <key>", code="invalid_api_key"
    )
    _log_refusal(error, path)
    return {
        "statusCode": 401,
        "headers": {"Content-Type": JSON, "WWW-Authenticate": "Bearer"},
        "body": _dumps(_error_body(error, _is_openai(path))),
        "isBase64Encoded": False,
    }


def _direct(payload: Any) -> Any:
    openai = isinstance(payload, Mapping) and "input" in payload and "inputs" not in payload
    try:
        if not isinstance(payload, Mapping):
            raise ApiError(
                400,
                'the payload must be a JSON object such as {"inputs": ["First text", "Second text"]}',
                code="invalid_body",
            )
        if openai:
            body, embedded = embed_openai(_parse(OpenAIEmbeddingsRequest, payload, status=400))
            _log_embedded("direct:openai", embedded)
            return body
        embedded = embed_tei(_parse(EmbedRequest, payload, status=422))
        _log_embedded("direct", embedded)
        return as_json_floats(embedded.vectors)
    except ApiError as exc:
        _log_refusal(exc, "direct")
        return {**_error_body(exc, openai), "status": exc.status}
    except Exception:
        logger.exception("direct invoke failed")
        error = ApiError(500, "internal error while embedding; see the function's logs", type="server_error")
        return {**_error_body(error, openai), "status": 500}


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: Any, context: Any) -> Any:
    if is_function_url_event(event):
        method = str(event["requestContext"]["http"].get("method", "")).upper()
        public = method == "GET" and event.get("rawPath") == "/health"
        if guard.enabled and not public and not guard.authorized(event.get("headers") or {}):
            return _unauthorized(event)
        return app.resolve(event, context)
    return _direct(event)

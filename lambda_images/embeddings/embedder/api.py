"""The embedding function's HTTP API (its Function URL), and how its errors look to TEI and OpenAI clients.

Routes; a direct `aws lambda invoke` takes `/embed`'s body (`{"inputs": ...}`,
answered as a list of vectors) or `/v1/embeddings`' (`{"input": ..., "model":
...}`) as its payload:

- `POST /` and `POST /embed`: Hugging Face TEI's embed, one vector per input;
- `POST /v1/embeddings`: OpenAI's embeddings (float, or base64 of float32);
- `POST /tokenize`: TEI's tokenize;
- `GET /info` (TEI), `GET /v1/models` (OpenAI), `GET /health` (public in API-key mode).

Request bodies are JSON objects, strict: an unknown field or a wrong type is an
error that names the field. Errors come in OpenAI's shape on `/v1/...` and in
TEI's `{"error", "error_type"}` elsewhere, with TEI's statuses (422 for a value
TEI cannot use). A direct invoke's error is
`{"error": {"message", "type", "param", "code", "status"}}`.

Authentication depends on the deployment (`function_url_auth`): AWS_IAM URLs
need SigV4-signed requests (service `lambda`); API_KEY URLs need
`Authorization: Bearer <key>` on every route but `GET /health`.

Limits (GET /info reports them): MAX_INPUTS inputs (256) of MAX_INPUT_CHARS
characters (50,000) each, the model's token limit per input (413, or
`truncate: true`), a 6 MB request; an answer that could pass Lambda's 6 MB
response limit is refused before any work, saying how many inputs fit; work
that cannot finish before the invocation's deadline is refused up front (503).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from embedder.schemas import (
    EmbeddingsUsage,
    EmbedRequest,
    EmbedResponse,
    HealthResponse,
    InfoResponse,
    OpenAIEmbedding,
    OpenAIEmbeddingsRequest,
    OpenAIEmbeddingsResponse,
    TokenizeRequest,
    TokenizeResponse,
    TokenRow,
)
from embedder.service import (
    Embedded,
    EmbeddingService,
    EmbedOptions,
    ResponseShape,
    as_base64,
    as_json_floats,
)
from lambda_common.app import FunctionApp, Invocation, Reply
from lambda_common.errors import (
    OPENAI,
    EmptyInput,
    ErrorFamily,
    InternalError,
    InvalidBody,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotEnoughTime,
    NotFound,
    RequestError,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from lambda_common.schemas import ModelCard, ModelList

# Bytes around each vector and around the whole response, for the size estimate.
TEI_SHAPE = {"per_item": 8, "fixed": 2048}
OPENAI_SHAPE = {"per_item": 96, "fixed": 2048}

_TEI_ERROR_TYPES: tuple[tuple[type[RequestError], str], ...] = (
    (EmptyInput, "Empty"),
    (Unauthorized, "Unauthorized"),
    (MethodNotAllowed, "MethodNotAllowed"),
    (NotFound, "NotFound"),
    (NotEnoughTime, "Overloaded"),
    (Unavailable, "Unhealthy"),
    (InternalError, "Backend"),
)


class TeiErrorBody(BaseModel):
    """TEI's error body."""

    error: str
    error_type: str = Field(description="Validation, Empty, Tokenizer, Backend, Overloaded, Unhealthy, ...")


class TeiErrors(ErrorFamily):
    """TEI's error body: ``{"error": message, "error_type": Validation|Empty|Backend|...}``."""

    def body(self, error: RequestError, status: int) -> dict[str, Any]:
        kind = next((name for cls, name in _TEI_ERROR_TYPES if isinstance(error, cls)), None)
        return {"error": error.message, "error_type": kind or ("Backend" if status >= 500 else "Validation")}


TEI = TeiErrors(
    "tei",
    statuses={InvalidRequest: 422, InvalidBody: 400, EmptyInput: 400, TooLarge: 413},
    model=TeiErrorBody,
)


def _tei_headers(embedded: Embedded, compute_type: str) -> dict[str, str]:
    """TEI's timing headers (milliseconds, as TEI sends them)."""

    def ms(seconds: float) -> str:
        return str(round(seconds * 1000))

    return {
        "x-compute-type": compute_type,
        "x-compute-time": ms(embedded.total_s),
        "x-total-time": ms(embedded.total_s),
        "x-tokenization-time": ms(embedded.tokenization_s),
        "x-queue-time": "0",
        "x-inference-time": ms(embedded.inference_s),
        "x-compute-tokens": str(embedded.tokens),
        "x-compute-characters": str(embedded.characters),
    }


class EmbeddingsApi:
    """The routes over one EmbeddingService (none: only the route table, for the OpenAPI document)."""

    TITLE = "Text embeddings (Lambda Function URL)"

    def __init__(self, service: EmbeddingService | None = None, *, threads: int = 1) -> None:
        self._service = service
        self.threads = threads
        self.created = int(time.time())
        self.app = app = FunctionApp(service="embeddings", native=TEI)
        tags = ("embeddings",)
        for path in ("/", "/embed"):
            app.route("POST", path, request=EmbedRequest, response=EmbedResponse, family=TEI, tags=tags)(
                self.embed
            )
        app.route(
            "POST",
            "/v1/embeddings",
            request=OpenAIEmbeddingsRequest,
            response=OpenAIEmbeddingsResponse,
            family=OPENAI,
            tags=tags,
        )(self.openai_embeddings)
        app.route("POST", "/tokenize", request=TokenizeRequest, response=TokenizeResponse, tags=tags)(
            self.tokenize
        )
        app.route("GET", "/info", response=InfoResponse, tags=("about",))(self.info)
        app.route("GET", "/v1/models", response=ModelList, tags=("about",))(self.models)
        app.route("GET", "/health", response=HealthResponse, public=True, tags=("about",))(self.health)
        app.direct(self.select)

    @property
    def service(self) -> EmbeddingService:
        if self._service is None:
            raise InternalError("no model is loaded in this process")
        return self._service

    @property
    def compute_type(self) -> str:
        return f"cpu+{self.service.backend.name}"

    @staticmethod
    def select(payload: Mapping[str, Any]) -> tuple[str, str]:
        """A direct payload: OpenAI's when it has ``input`` (not ``inputs``), else TEI's."""
        if "input" in payload and "inputs" not in payload:
            return "POST", "/v1/embeddings"
        if "inputs" not in payload:
            raise InvalidBody(
                'the payload needs "inputs" (TEI, e.g. {"inputs": ["First text", "Second text"]}) '
                'or "input" and "model" (OpenAI)'
            )
        return "POST", "/embed"

    def _log(self, route: str, embedded: Embedded) -> None:
        """Log the batch and add its figures to the invocation's metrics (inputs, tokens, latency)."""
        self.app.logger.info(
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
        self.app.metrics.embedding(
            inputs=len(embedded.vectors), tokens=embedded.tokens, latency_ms=embedded.total_s * 1000
        )

    # ------------------------------------------------------------------ routes

    def embed(self, request: EmbedRequest, call: Invocation) -> Reply:
        """Embed texts (TEI): one vector per input."""
        service = self.service
        options = EmbedOptions(
            normalize=request.normalize,
            truncate=service.settings.auto_truncate if request.truncate is None else request.truncate,
            truncation_direction=request.truncation_direction,
            prompt_name=request.prompt_name,
            dimensions=request.dimensions,
        )
        embedded = service.embed(request.inputs, options, ResponseShape("float", **TEI_SHAPE), call.deadline)
        self._log(call.label, embedded)
        body = EmbedResponse.model_construct(root=as_json_floats(embedded.vectors))
        return Reply(body, headers=_tei_headers(embedded, self.compute_type))

    def openai_embeddings(self, request: OpenAIEmbeddingsRequest, call: Invocation) -> Reply:
        """Embed texts (OpenAI), as floats or base64 float32."""
        service = self.service
        if not service.accepts_model(request.model):
            raise ModelNotFound(
                f"the model `{request.model}` does not exist here; this function serves `{service.model_id}`",
                param="model",
            )
        options = EmbedOptions(
            normalize=True,
            truncate=service.settings.auto_truncate if request.truncate is None else request.truncate,
            prompt_name=request.prompt_name,
            dimensions=request.dimensions,
        )
        shape = ResponseShape(request.encoding_format, **OPENAI_SHAPE)
        embedded = service.embed(request.input, options, shape, call.deadline)
        self._log("/v1/embeddings" if call.via == "url" else "direct:openai", embedded)
        if request.encoding_format == "base64":
            vectors: list[Any] = [as_base64(vector) for vector in embedded.vectors]
        else:
            vectors = as_json_floats(embedded.vectors)
        body = OpenAIEmbeddingsResponse.model_construct(
            data=[OpenAIEmbedding.model_construct(index=i, embedding=v) for i, v in enumerate(vectors)],
            model=service.model_id,
            usage=EmbeddingsUsage(prompt_tokens=embedded.tokens, total_tokens=embedded.tokens),
        )
        return Reply(body, headers=_tei_headers(embedded, self.compute_type))

    def tokenize(self, request: TokenizeRequest, call: Invocation) -> TokenizeResponse:
        """Tokenize texts (TEI): ids, text and character offsets of each token."""
        rows = self.service.tokenize(
            request.inputs, add_special_tokens=request.add_special_tokens, prompt_name=request.prompt_name
        )
        return TokenizeResponse.model_construct(
            root=[[TokenRow.model_construct(**token.__dict__) for token in row] for row in rows]
        )

    def info(self, call: Invocation) -> InfoResponse:
        """The model, its limits and how it runs (TEI's /info plus this function's own fields)."""
        return InfoResponse.model_validate(self.service.describe(self.threads))

    def models(self, call: Invocation) -> ModelList:
        """The model this function serves (OpenAI's model list)."""
        service = self.service
        owner = service.model_id.split("/", 1)[0] if "/" in service.model_id else "local"
        return ModelList(data=[ModelCard(id=service.model_id, created=self.created, owned_by=owner)])

    def health(self, call: Invocation) -> HealthResponse:
        """Liveness: answers without the API key and without touching the model."""
        return HealthResponse(model_id=self.service.model_id, backend=self.service.backend.name)

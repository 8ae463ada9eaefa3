"""Lambda entry point of the embedding function (TEI- and OpenAI-compatible).

Init (this module's import, Lambda's init phase) does everything heavy once:
settings, the backend (ONNX Runtime by default, no torch), the model; with
SnapStart also one warm-up request before the snapshot. Then every invocation,
a Function URL event or a direct ``aws lambda invoke`` payload, goes through
the shared request core
(``lambda_common.app``) to the routes in ``embedder.api``.

docs/embeddings.md describes the API, the limits and the configuration.
"""

from __future__ import annotations

from embedder.api import EmbeddingsApi
from embedder.service import EmbeddingService
from embedder.settings import Settings
from lambda_common.auth import ApiKeyGuard
from lambda_common.cpu import resolve_threads

settings = Settings()  # type: ignore[call-arg]  # every field comes from the environment or its default
threads = resolve_threads(settings.n_threads)
service = EmbeddingService.from_settings(settings, threads)
backend = service.backend
MODEL_ID = service.model_id
api = EmbeddingsApi(service, threads=threads)
app = api.app
app.configure(
    guard=ApiKeyGuard.from_environment(),
    max_body_bytes=settings.max_body_bytes,
    max_response_bytes=settings.max_response_bytes,
    deadline_margin_ms=settings.deadline_margin_ms,
)
INIT_MS = app.ready(warm_up=service.warm_up)
app.logger.info(
    "model loaded",
    extra={
        "model_id": MODEL_ID,
        "backend": backend.name,
        "threads": threads,
        "dimensions": backend.info.dimension,
        "max_input_length": backend.info.max_seq_length,
        "prompts": sorted(service.prompts.prompts),
        "default_prompt_name": service.prompts.default_name,
        "api_key": app.guard.enabled,
        "load_ms": round(INIT_MS),
    },
)

lambda_handler = app.streaming_handler

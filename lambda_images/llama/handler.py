"""Lambda entry point of the llama.cpp generator.

Init (this module's import, Lambda's init phase) reads the settings and loads
the GGUF model once; with SnapStart it also runs one short generation before
the snapshot, so every restored copy finds everything warm. Every invocation,
a Function URL event or a direct ``aws lambda invoke`` payload, goes through
the shared request core (``lambda_common.app``) to the routes in
``llama_app.api``.

The image runs this module under the project's own runtime loop
(``python -m lambda_common.lambda_runtime handler.lambda_handler``), which can
stream: a route that answers with a stream gets its tokens sent as they are
generated. docs/llama.md describes the API.
"""

from __future__ import annotations

from lambda_common.auth import ApiKeyGuard
from lambda_common.cpu import resolve_threads
from llama_app.api import GeneratorApi
from llama_app.engine import Engine
from llama_app.settings import LlamaSettings

settings = LlamaSettings()
N_THREADS = resolve_threads(settings.n_threads)
engine = Engine.load(settings, N_THREADS)
api = GeneratorApi(engine, settings)
app = api.app
app.configure(
    guard=ApiKeyGuard.from_environment(),
    max_body_bytes=settings.max_body_bytes,
    deadline_margin_ms=settings.deadline_margin_ms,
)
INIT_MS = app.ready(warm_up=engine.warm_up)
app.logger.info(
    "model loaded",
    extra={
        "model": settings.alias,
        "n_ctx": engine.n_ctx,
        "n_threads": N_THREADS,
        "n_threads_batch": settings.n_threads_batch or N_THREADS,
        "init_ms": round(INIT_MS, 1),
        "api_key_guard": app.guard.enabled,
        "url_streaming": app.url_streaming,
    },
)

lambda_handler = app.streaming_handler

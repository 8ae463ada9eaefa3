"""Lambda entry point of the batch embedding function: the embeddings image with another command.

The stack runs this image twice: the online function with the image's CMD
(``handler.lambda_handler``) and, when ``batch_embeddings`` is on, the batch
function with the command ``batch.lambda_handler``. Both load the same model
with the same settings and embed through the same ``EmbeddingService``; this
one takes the batches of the embedding state machine's Distributed Map and
writes Parquet to S3 (``embedder.batch``). pyarrow and the S3 client are
imported here only, so the online function's init never pays for them.

Environment (set by stacks/batch_embeddings.py): ``BATCH_OUTPUT_BUCKET`` and
``BATCH_OUTPUT_PREFIX``, the one place this function may write; plus the
model settings the online function reads (embedder.settings).

Errors the state machine tells apart by their type (the exception class):
``BatchNotFinished`` (part written, retried at once), ``StorageUnavailable``
(S3 failed, retried with backoff), ``InvalidBatch``, ``StorageRefused`` and
``TimeoutTooShort`` (not retried: the items count as failed).
"""

from __future__ import annotations

import os
from typing import Any

from aws_lambda_powertools import Logger

from embedder.batch import WRITE_MARGIN_MS, BatchJob
from embedder.batch_s3 import S3Store
from embedder.service import EmbeddingService
from embedder.settings import Settings
from lambda_common.cpu import resolve_threads
from lambda_common.deadline import Deadline

LOGGED = ("batch", "items", "embedded", "tokens", "already_written", "bad_records", "seconds")
"""Result fields logged per batch (never a record's text)."""

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "embeddings-batch"))

settings = Settings()  # type: ignore[call-arg]  # every field comes from the environment or its default
threads = resolve_threads(settings.n_threads)
service = EmbeddingService.from_settings(settings, threads)
backend = service.backend
MODEL_ID = service.model_id
service.warm_up()
job = BatchJob(
    service,
    S3Store(),
    output_bucket=os.environ["BATCH_OUTPUT_BUCKET"],
    output_prefix=os.environ["BATCH_OUTPUT_PREFIX"],
)
logger.info(
    "batch model loaded",
    extra={
        "model_id": MODEL_ID,
        "backend": backend.name,
        "threads": threads,
        "tokens_per_s": round(service.tokens_per_s or 0.0),
        "output": f"s3://{job.output_bucket}/{job.output_prefix}",
    },
)


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    """One batch of the Map run: its vectors written to S3, its result (counts, bad records) returned."""
    deadline = Deadline.of(context, max(settings.deadline_margin_ms, WRITE_MARGIN_MS))
    result = job.run(event, deadline)
    logger.info(
        "batch done",
        extra={key: result[key] for key in LOGGED},
    )
    return result

"""The batch embedding function end to end: a 20,000-passage corpus to Parquet in S3, with the real model.

S3 is moto's server (an AWS stand-in, started here on a free local port); the
function itself is real: lambda_images/embeddings/batch.py imported as the
runtime would import it (its init loads all-MiniLM-L6-v2, exported to ONNX
by the image's own exporter), invoked with batches made the way the state
machine's Distributed Map makes them (tests/test_batch_asl.py: the JSON Lines
reader, the item selector and the batcher), each event passed through JSON as
Lambda passes it. Only the Lambda context object is a stand-in.

The online function (handler.py) is imported next to it with the same
settings, to check that both give the same vectors for the same texts.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests

from local.models import EMBEDDINGS_MODEL_ID
from tests.conftest import BATCH_BUCKET, FakeContext
from tests.test_batch_asl import batch, read_jsonl, select

pytestmark = pytest.mark.slow

EMBEDDINGS_DIR = Path(__file__).resolve().parent.parent / "lambda_images" / "embeddings"
BUCKET = BATCH_BUCKET
OUTPUT_PREFIX = "output/"
SELECTOR = {"index.$": "$$.Map.Item.Index", "value.$": "$$.Map.Item.Value"}
"""The Distributed Map's ItemSelector (tests/test_stack_batch.py checks the definition has this one)."""
ITEMS_PER_BATCH = 500
BYTES_PER_BATCH = 204_800
"""cdk.json's defaults for batch_embeddings_items_per_batch and _bytes_per_batch."""
PASSAGES = 20_000
DIMENSIONS = 384
WORDS = [
    "river",
    "mountain",
    "village",
    "bread",
    "cheese",
    "harbour",
    "festival",
    "museum",
    "library",
    "garden",
    "trail",
    "winter",
    "summer",
    "market",
    "bridge",
    "castle",
    "forest",
    "valley",
    "coast",
    "island",
    "station",
    "orchard",
    "vineyard",
    "meadow",
    "lake",
    "tower",
]


def batch_context() -> FakeContext:
    """The batch function's context: five minutes left, so no test batch meets its deadline by chance."""
    return FakeContext(
        remaining_ms=300_000,
        aws_request_id="batch-test",
        function_name="embeddings-batch",
        memory_limit_in_mb=2048,
        invoked_function_arn="arn:aws:lambda:us-east-1:123456789012:function:embeddings-batch",
    )


# ------------------------------------------------------------------ the corpus

BAD_LINES: list[tuple[bytes, str]] = [
    (b'{"text": "a passage without an id"}', "missing id field 'id'"),
    (b'{"id": null, "text": "a null id"}', "missing id field 'id'"),
    (b'{"id": "bad-empty", "text": ""}', "empty text"),
    (b'{"id": "bad-blank", "text": "   \\n  "}', "empty text"),
    (b'{"id": "bad-no-text"}', "missing text field 'text'"),
    (b'{"id": "bad-number", "text": 42}', "text field 'text' must be a string, got int"),
    (b'{"id": "bad-latin1", "text": "caf\xe9 cr\xe8me, not UTF-8"}', "text is not valid UTF-8"),
    (b'{"id": "bad-surrogate", "text": "a lone \\ud800 surrogate"}', "text is not valid UTF-8"),
    (b"[1, 2, 3]", "the record is a JSON array, not an object"),
    (
        b'{"id": "bad-long", "text": "' + b" ".join([b"word"] * 600) + b'"}',
        "tokens; this model takes at most 256",
    ),
]
"""Bad records and the reason each must be reported with (truncation off)."""


def passage(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))).capitalize() + "."


def make_corpus(count: int, *, seed: int = 15) -> tuple[bytes, dict[str, str], dict[int, str]]:
    """JSON Lines bytes, the good records (id -> text) and the bad lines' item index -> expected reason."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    lines: list[bytes] = []
    good: dict[str, str] = {}
    bad: dict[int, str] = {}
    every = count // (len(BAD_LINES) + 1)
    for i in range(count):
        if i and i % every == 0 and len(bad) < len(BAD_LINES):
            line, reason = BAD_LINES[len(bad)]
            bad[len(lines)] = reason
            lines.append(line)
        record_id = f"doc-{i:06d}"
        good[record_id] = passage(rng)
        lines.append(json.dumps({"id": record_id, "text": good[record_id], "source": "generated"}).encode())
    return b"\n".join(lines) + b"\n", good, bad


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free local port (an AWS stand-in), with the test bucket."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(name, value)
        patch.delenv("AWS_PROFILE", raising=False)
        # moto's state is per process: start from nothing, whichever module ran a server before
        requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield endpoint
    server.stop()


def load_module(name: str, file: str, model_dir: Path, **environment: str) -> types.ModuleType:
    """Import an entry point of the embeddings image as a fresh module, configured by ``environment``."""
    with pytest.MonkeyPatch.context() as patch:
        for variable, value in {
            "MODEL_DIR": str(model_dir),
            "MODEL_ID": EMBEDDINGS_MODEL_ID,
            "BACKEND": "onnx",
            "N_THREADS": "1",
            "MAX_INPUTS": "256",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "BATCH_OUTPUT_BUCKET": BUCKET,
            "BATCH_OUTPUT_PREFIX": OUTPUT_PREFIX,
            **environment,
        }.items():
            patch.setenv(variable, value)
        for variable in ("PROMPTS", "DEFAULT_PROMPT_NAME", "AUTO_TRUNCATE", "API_KEY", "API_KEY_SECRET_ARN"):
            patch.delenv(variable, raising=False)
        if str(EMBEDDINGS_DIR) not in sys.path:
            sys.path.insert(0, str(EMBEDDINGS_DIR))
        spec = importlib.util.spec_from_file_location(name, EMBEDDINGS_DIR / file)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def batch_fn(model_dir: Path, s3_endpoint: str) -> types.ModuleType:
    return load_module("embeddings_batch_under_test", "batch.py", model_dir)


@pytest.fixture(scope="module")
def online_fn(model_dir: Path) -> types.ModuleType:
    return load_module("embeddings_online_for_batch", "handler.py", model_dir)


def job_errors() -> types.ModuleType:
    """The job's module as the batch entry point imported it (its exception classes)."""
    return sys.modules["embedder.batch"]


def batch_events(data: bytes, prefix: str, **options: Any) -> list[dict[str, Any]]:
    """The child workflow inputs the Distributed Map would make from ``data``."""
    batch_input = {
        "output": {"bucket": BUCKET, "prefix": prefix},
        "options": {"id_field": "id", "text_field": "text", "truncate": False, **options},
        "source": {"bucket": BUCKET, "key": "input/corpus.jsonl"},
    }
    items = select(read_jsonl(data), SELECTOR, {})
    return [
        {"BatchInput": batch_input, "Items": group}
        for group in batch(
            items, max_items=ITEMS_PER_BATCH, max_bytes=BYTES_PER_BATCH, batch_input=batch_input
        )
    ]


def invoke(module: types.ModuleType, event: dict[str, Any], context: FakeContext | None = None) -> Any:
    """As Lambda does it: the event arrives as JSON, the result leaves as JSON."""
    result = module.lambda_handler(json.loads(json.dumps(event)), context or batch_context())
    return json.loads(json.dumps(result))


def listing(prefix: str) -> dict[str, tuple[str, Any]]:
    s3 = boto3.client("s3")
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        for item in page.get("Contents", []):
            found[item["Key"]] = (item["ETag"], item["LastModified"])
    return found


def read_vectors(prefix: str) -> tuple[list[str], np.ndarray[Any, Any], list[pa.Schema]]:
    s3 = boto3.client("s3")
    ids: list[str] = []
    vectors = []
    schemas = []
    for key in sorted(listing(prefix + "vectors/")):
        table = pq.read_table(io.BytesIO(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        schemas.append(table.schema)
        ids.extend(table.column("id").to_pylist())
        if table.num_rows:
            vectors.append(np.asarray(table.column("vector").to_pylist(), dtype=np.float32))
    return ids, np.concatenate(vectors) if vectors else np.zeros((0, DIMENSIONS), np.float32), schemas


def read_errors(prefix: str) -> list[dict[str, Any]]:
    s3 = boto3.client("s3")
    errors: list[dict[str, Any]] = []
    for key in sorted(listing(prefix + "errors/")):
        errors.extend(json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["errors"])
    return errors


# ------------------------------------------------------------------ the corpus run


@pytest.fixture(scope="module")
def corpus() -> tuple[bytes, dict[str, str], dict[int, str]]:
    return make_corpus(PASSAGES)


@pytest.fixture(scope="module")
def corpus_run(
    batch_fn: types.ModuleType, corpus: tuple[bytes, dict[str, str], dict[int, str]]
) -> dict[str, Any]:
    """Every batch of the corpus through the batch function, once."""
    data, _, _ = corpus
    events = batch_events(data, "output/corpus/")
    results = [invoke(batch_fn, event) for event in events]
    return {"events": events, "results": results, "listing": listing("output/corpus/")}


def test_every_good_record_has_exactly_one_vector(
    corpus: tuple[bytes, dict[str, str], dict[int, str]], corpus_run: dict[str, Any]
) -> None:
    _, good, bad = corpus
    # Given 20,000 passages and a few bad records, batched as the Distributed Map batches them
    assert len(good) == PASSAGES
    assert len(bad) == len(BAD_LINES)
    assert len(corpus_run["events"]) >= PASSAGES // ITEMS_PER_BATCH
    # When every batch went through the function, then the Parquet files hold each good id once
    ids, vectors, _ = read_vectors("output/corpus/")
    assert len(ids) == len(set(ids)) == PASSAGES
    assert set(ids) == set(good)
    # And one vector per id, unit length (normalize defaults to true), finite
    assert vectors.shape == (PASSAGES, DIMENSIONS)
    assert np.all(np.isfinite(vectors))
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # And the results add up: items, embedded, tokens
    results = corpus_run["results"]
    assert sum(r["items"] for r in results) == PASSAGES + len(BAD_LINES)
    assert sum(r["embedded"] for r in results) == PASSAGES
    assert sum(r["tokens"] for r in results) > PASSAGES * 5


def test_one_parquet_object_per_batch_in_the_layout_vector_stores_ingest(corpus_run: dict[str, Any]) -> None:
    _, _, schemas = read_vectors("output/corpus/")
    vector_keys = [key for key in corpus_run["listing"] if "/vectors/" in key]
    assert len(vector_keys) == len(corpus_run["events"])
    for schema in schemas:
        assert schema.field("id").type == pa.string()
        assert schema.field("vector").type == pa.list_(
            pa.float32(), DIMENSIONS
        )  # FixedSizeList<float32, 384>
        metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        assert metadata["embeddings.model_id"] == EMBEDDINGS_MODEL_ID
        assert metadata["embeddings.dimensions"] == "384"
        assert metadata["embeddings.normalize"] == "true"
        assert metadata["embeddings.source"] == f"s3://{BUCKET}/input/corpus.jsonl"


def test_bad_records_are_reported_with_their_reason_and_do_not_stop_their_batch(
    corpus: tuple[bytes, dict[str, str], dict[int, str]], corpus_run: dict[str, Any]
) -> None:
    _, _, bad = corpus
    # Then each bad line is in an errors object next to the vectors, at its item index, with its reason
    errors = {error["item"]: error for error in read_errors("output/corpus/")}
    assert set(errors) == set(bad)
    for item, reason in bad.items():
        assert reason in errors[item]["reason"], (item, errors[item])
    assert errors[min(bad)]["id"] is None  # no id could be read
    # And in the results of their batches, which still embedded everything else
    listed = {entry["item"]: entry for r in corpus_run["results"] for entry in r["bad_records_listed"]}
    assert set(listed) == set(bad)
    assert sum(r["bad_records"] for r in corpus_run["results"]) == len(bad)


def test_vectors_equal_the_online_functions_for_the_same_texts(
    online_fn: types.ModuleType,
    corpus: tuple[bytes, dict[str, str], dict[int, str]],
    corpus_run: dict[str, Any],
) -> None:
    _, good, _ = corpus
    ids, vectors, _ = read_vectors("output/corpus/")
    by_id = dict(zip(ids, vectors, strict=True))
    sample = random.Random(3).sample(sorted(good), 256)  # noqa: S311
    # When the online function embeds the same texts (TEI direct invoke, same options)
    online = []
    for start in range(0, len(sample), 64):
        texts = [good[record_id] for record_id in sample[start : start + 64]]
        request = {"inputs": texts, "truncate": False, "normalize": True}
        online.extend(online_fn.app.lambda_handler(request, batch_context()))
    # Then the vectors are the same, to float32 precision
    batch_vectors = np.stack([by_id[record_id] for record_id in sample])
    assert np.allclose(batch_vectors, np.asarray(online, dtype=np.float32), atol=1e-5)
    assert float(np.min(np.sum(batch_vectors * np.asarray(online), axis=1))) > 0.99999


def test_a_rerun_writes_nothing_new(batch_fn: types.ModuleType, corpus_run: dict[str, Any]) -> None:
    # When the same batches run again (a re-run of the same input, or every batch retried)
    again = [invoke(batch_fn, event) for event in corpus_run["events"]]
    # Then every batch finds itself written and writes nothing: same objects, same versions
    assert all(r["embedded"] == 0 and r["written"] == [] for r in again)
    assert [r["already_written"] for r in again] == [r["items"] for r in corpus_run["results"]]
    assert listing("output/corpus/") == corpus_run["listing"]


# ------------------------------------------------------------------ deadlines and refusals


class ScriptedDeadline:
    """A deadline that leaves time for the first ``calls`` model calls and none after (a scripted clock)."""

    at: float | None = 0.0

    def __init__(self, calls: int) -> None:
        self.allowed = calls
        self.calls = 0

    def remaining_s(self) -> float:
        self.calls += 1
        return 1e6 if self.calls <= self.allowed else 0.0

    def remaining_ms(self) -> float:
        return self.remaining_s() * 1000

    def passed(self) -> bool:
        return self.calls > self.allowed


def test_a_batch_the_deadline_cuts_is_written_in_parts_and_resumed(
    batch_fn: types.ModuleType, corpus: tuple[bytes, dict[str, str], dict[int, str]]
) -> None:
    data, good, _ = corpus
    (event, *_) = batch_events(data, "output/deadline/")
    expected = {item["value"]["id"] for item in event["Items"] if item["value"].get("id") in good}
    # Given a deadline that leaves time for three calls to the model (64 records each)
    with pytest.raises(job_errors().BatchNotFinished, match="records remain for the next try") as cut:
        batch_fn.job.run(json.loads(json.dumps(event)), ScriptedDeadline(3))
    # Then the part that was embedded is written, and only that part
    first_ids, _, _ = read_vectors("output/deadline/")
    assert len(first_ids) == 3 * 64
    assert "positions 0-" in str(cut.value)
    # When the state machine retries with time enough, then only the rest is embedded
    result = invoke(batch_fn, event)
    assert result["already_written"] > 0
    assert result["embedded"] == len(expected) - len(first_ids)
    ids, _, _ = read_vectors("output/deadline/")
    assert sorted(ids) == sorted(expected)  # every record once: nothing lost, nothing twice
    assert len(listing("output/deadline/vectors/")) == 2
    # And a third invocation finds the batch complete
    assert invoke(batch_fn, event)["written"] == []


def test_no_time_for_even_one_record_is_a_clear_error_and_writes_nothing(
    batch_fn: types.ModuleType, corpus: tuple[bytes, dict[str, str], dict[int, str]]
) -> None:
    data, _, _ = corpus
    (event, *_) = batch_events(data, "output/no-time/")
    with pytest.raises(job_errors().TimeoutTooShort, match="raise the batch function's timeout"):
        batch_fn.job.run(event, ScriptedDeadline(0))
    assert listing("output/no-time/") == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"output": {"bucket": "someone-elses-bucket", "prefix": "output/x/"}}, "writes only under"),
        ({"output": {"bucket": BUCKET, "prefix": "input/x/"}}, "writes only under"),
        ({"options": {"prompt_name": "no-such-prompt"}}, "the run's options cannot work"),
        ({"options": {"dimensions": 9999}}, "dimensions must be between 1 and 384"),
        ({"options": {"text_feild": "text"}}, "not a batch of the embedding state machine"),
    ],
)
def test_a_batch_that_cannot_work_is_refused_before_any_work(
    batch_fn: types.ModuleType, change: dict[str, Any], message: str
) -> None:
    event = {
        "BatchInput": {"output": {"bucket": BUCKET, "prefix": "output/refused/"}, "options": {}, **change},
        "Items": [{"index": 0, "value": {"id": "a", "text": "some text"}}],
    }
    with pytest.raises(job_errors().InvalidBatch, match=message):
        invoke(batch_fn, event)
    assert listing("output/refused/") == {}


def test_truncation_per_run_embeds_the_over_long_record(batch_fn: types.ModuleType) -> None:
    long_text = " ".join(["word"] * 600)
    event = {
        "BatchInput": {
            "output": {"bucket": BUCKET, "prefix": "output/truncated/"},
            "options": {"truncate": True, "id_field": "key", "text_field": "body"},
        },
        "Items": [
            {"index": 0, "value": {"key": "long", "body": long_text}},
            {"index": 1, "value": {"key": 7, "body": "an integer id"}},
        ],
    }
    result = invoke(batch_fn, event)
    assert (result["embedded"], result["bad_records"]) == (2, 0)
    ids, vectors, _ = read_vectors("output/truncated/")
    assert ids == ["long", "7"]  # field names from the run; integer ids kept as text
    assert vectors.shape == (2, DIMENSIONS)

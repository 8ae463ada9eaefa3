"""The bulk-embedding function's throughput, against the online handler on the same texts, and its price.

    python -m benchmarks.batch_bench worker --model-dir DIR --model-id ID --out result.json

The measurement runs in a worker process of its own (the two entry points of the
embeddings image read their settings from the environment at import):

* **S3 is moto** (its server on a free local port, ``AWS_ENDPOINT_URL_S3``): AWS
  itself cannot exist here. Everything else is real: the batch function's entry
  point ``lambda_images/embeddings/batch.py`` imported as the runtime imports it
  (model load, warm-up), invoked with a batch as the state machine's Distributed
  Map makes it (``{"BatchInput": ..., "Items": [{"index", "value"}]}``, passed
  through JSON), writing its Parquet file to the moto bucket; and the online
  function's ``handler.py`` beside it, the same model and threads, embedding the
  same texts with TEI direct invokes of 64 texts (the batch function's own chunk).
* Rounds alternate which goes first; each batch round writes under a new output
  folder, so nothing is skipped as already written.

Tokens/s per function = the batch's token count (its result) / the handler's wall
time, S3 writes included. The projected price per million tokens reuses the
bulk client's estimate (``client.embed_s3.project``) and its count of Step
Functions transitions and S3 requests per batch, at cdk.json's batch memory.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.embeddings_bench import WORDS
from benchmarks.stats import summarize

if TYPE_CHECKING:
    from stacks.config import AppConfig

ROOT = Path(__file__).resolve().parent.parent
EMBEDDINGS_DIR = ROOT / "lambda_images" / "embeddings"
COMMON_DIR = ROOT / "lambda_images" / "common"
BUCKET = "bench-bulk-embeddings"
OUTPUT_PREFIX = "output/"
ONLINE_CHUNK = 64
"""Texts per online request: the batch function embeds 64 records per model call (embedder.batch)."""
WORDS_PER_PASSAGE = (36, 48)
"""Passages of about 45-60 tokens with all-MiniLM-L6-v2's tokenizer: short passages, as corpora chunk them."""
METHOD = (
    "The batch entry point (lambda_images/embeddings/batch.py) imported in a worker process with S3 as "
    "moto's server, invoked with one Distributed Map batch of {records} JSON Lines records (about "
    "{tokens_per_record:.0f} tokens each), Parquet written to the moto bucket; the online handler.py in the "
    "same process, same model and {threads} thread(s), on the same texts in direct invokes of 64; "
    "{rounds} rounds alternating; tokens/s = the batch's token count / wall time."
)
COST_METHOD = (
    "client.embed_s3.project for 1,000,000 tokens of records like the bench's, batches of "
    "{items_per_batch} (cdk.json), the batch function at {memory_mb} MB {architecture} in {region} running "
    "at batch.tokens_per_s_per_function, plus {transitions} Step Functions transitions per batch + "
    "{run_transitions} per run and {s3} S3 requests per batch (client.embed_s3's counts), "
    "benchmarks/prices.json. A projection: this machine's speed, not Lambda's."
)


@dataclass(frozen=True)
class BatchSettings:
    """What the projected price needs of the batch function's settings (tests give their own)."""

    memory_mb: int
    architecture: str
    items_per_batch: int

    @classmethod
    def of(cls, config: AppConfig) -> BatchSettings:
        """The batch function as cdk.json configures it (it runs on the embeddings image's architecture)."""
        return cls(
            memory_mb=config.batch.memory_mb,
            architecture=config.embeddings.architecture,
            items_per_batch=config.batch.items_per_batch,
        )


# ------------------------------------------------------------------ the worker


class FakeContext:
    """Stands in for the Lambda context object (AWS itself)."""

    aws_request_id = "bench"
    function_name = "embeddings-batch"
    memory_limit_in_mb = 2048
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:embeddings-batch"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def passages(count: int, seed: int = 7) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"doc-{i:06d}",
            "text": " ".join(rng.choice(WORDS) for _ in range(rng.randint(*WORDS_PER_PASSAGE))),
        }
        for i in range(count)
    ]


def batch_event(records: Sequence[dict[str, str]], prefix: str) -> dict[str, Any]:
    """One child-workflow input as the Distributed Map makes it (ItemSelector index/value, ItemBatcher)."""
    return {
        "BatchInput": {
            "output": {"bucket": BUCKET, "prefix": prefix},
            "options": {"id_field": "id", "text_field": "text", "truncate": False},
            "source": {"bucket": BUCKET, "key": "input/bench.jsonl"},
        },
        "Items": [{"index": i, "value": record} for i, record in enumerate(records)],
    }


def _environment(model_dir: str, model_id: str, backend: str, threads: int, endpoint: str) -> None:
    os.environ.update(
        {
            "AWS_ENDPOINT_URL_S3": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "MODEL_DIR": model_dir,
            "MODEL_ID": model_id,
            "BACKEND": backend,
            "N_THREADS": str(threads),
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "POWERTOOLS_METRICS_DISABLED": "true",
            "BATCH_OUTPUT_BUCKET": BUCKET,
            "BATCH_OUTPUT_PREFIX": OUTPUT_PREFIX,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ORT_DISABLE_TELEMETRY": "1",
        }
    )
    for name in (
        "AWS_PROFILE",
        "PROMPTS",
        "DEFAULT_PROMPT_NAME",
        "AUTO_TRUNCATE",
        "API_KEY",
        "API_KEY_SECRET_ARN",
    ):
        os.environ.pop(name, None)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time the batch entry point and the online handler on the same texts, alternating."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer  # S3 is moto's server: AWS itself cannot exist here

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        _environment(args.model_dir, args.model_id, args.backend, args.threads, f"http://{host}:{port}")
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        sys.path[:0] = [str(EMBEDDINGS_DIR), str(COMMON_DIR)]
        batch = importlib.import_module("batch")
        online = importlib.import_module("handler")
        records = passages(args.records)
        texts = [record["text"] for record in records]
        context = FakeContext()

        def run_batch(round_: int) -> tuple[float, int]:
            event = json.loads(json.dumps(batch_event(records, f"{OUTPUT_PREFIX}bench-{round_}/")))
            started = time.perf_counter()
            result = json.loads(json.dumps(batch.lambda_handler(event, context)))
            seconds = time.perf_counter() - started
            if result["embedded"] != len(records) or not result["written"]:
                raise RuntimeError(f"the batch function did not embed and write every record: {result}")
            return seconds, int(result["tokens"])

        def run_online() -> float:
            started = time.perf_counter()
            for start in range(0, len(texts), ONLINE_CHUNK):
                chunk = texts[start : start + ONLINE_CHUNK]
                vectors = online.app.lambda_handler(
                    {"inputs": chunk, "truncate": False, "normalize": True}, context
                )
                if not isinstance(vectors, list) or len(vectors) != len(chunk):
                    raise RuntimeError(f"the online handler refused the texts: {str(vectors)[:300]}")
            return time.perf_counter() - started

        run_batch(-1)  # warm both paths (pyarrow, the S3 client, the model)
        run_online()
        batch_s: list[float] = []
        online_s: list[float] = []
        tokens = 0
        for i in range(args.rounds):
            for side in ("batch", "online") if i % 2 == 0 else ("online", "batch"):
                if side == "batch":
                    seconds, tokens = run_batch(i)
                    batch_s.append(seconds)
                else:
                    online_s.append(run_online())
            print(
                f"batch: round {i + 1}/{args.rounds}: batch function {tokens / batch_s[-1]:,.0f} tokens/s, "
                f"online handler {tokens / online_s[-1]:,.0f} tokens/s",
                file=sys.stderr,
                flush=True,
            )
        return {"records": len(records), "tokens": tokens, "batch_s": batch_s, "online_s": online_s}
    finally:
        server.stop()


# ------------------------------------------------------------------ the parent


def measure(
    model_dir: Path,
    model_id: str,
    backend: str,
    *,
    threads: int,
    records: int,
    rounds: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Run the worker; its figures as a dict (batch_s, online_s, tokens, records)."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as scratch:
        out = Path(scratch) / "result.json"
        command = [
            sys.executable,
            "-m",
            "benchmarks.batch_bench",
            "worker",
            "--model-dir",
            str(model_dir),
            "--model-id",
            model_id,
            "--backend",
            backend,
            "--threads",
            str(threads),
            "--records",
            str(records),
            "--rounds",
            str(rounds),
            "--out",
            str(out),
        ]
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        assert process.stderr is not None
        tail: list[str] = []
        for line in process.stderr:
            line = line.rstrip()
            if line.startswith("batch: "):
                progress(line)
            tail = [*tail[-40:], line]
        if process.wait() != 0 or not out.is_file():
            raise RuntimeError(f"the batch bench worker failed ({process.returncode}):\n" + "\n".join(tail))
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def projected_usd_per_million(
    tokens_per_s: float, tokens_per_record: float, settings: BatchSettings, region: str
) -> tuple[float | None, str]:
    """USD per million tokens of a bulk run, as ``python -m client embed-s3`` estimates and prices one."""
    from client.embed_s3 import (
        CHARS_PER_TOKEN,
        RUN_TRANSITIONS,
        S3_REQUESTS_PER_BATCH,
        TRANSITIONS_PER_BATCH,
        Sample,
        Throughput,
        project,
    )

    method = COST_METHOD.format(
        items_per_batch=settings.items_per_batch,
        memory_mb=settings.memory_mb,
        architecture=settings.architecture,
        region=region,
        transitions=TRANSITIONS_PER_BATCH,
        run_transitions=RUN_TRANSITIONS,
        s3=S3_REQUESTS_PER_BATCH,
    )
    # A corpus of a million tokens in records like the bench's, as a sample the client's estimate reads.
    records = math.ceil(1_000_000 / tokens_per_record)
    chars = round(records * (tokens_per_record - 2) * CHARS_PER_TOKEN)  # the client adds [CLS] and [SEP]
    sample = Sample(object_bytes=chars, sample_bytes=chars, records=records, text_chars=chars)
    run = project(
        sample,
        Throughput(tokens_per_s, "batch.tokens_per_s_per_function"),
        memory_mb=settings.memory_mb,
        concurrency=1,
        items_per_batch=settings.items_per_batch,
        region=region,
        architecture=settings.architecture,
    )
    if run.overheads is None:
        return None, method + f" Not priced: prices.json has no Step Functions or S3 price for {region}."
    return float(run.total / Decimal(run.tokens) * 1_000_000), method


def run(
    model_dir: Path,
    model_id: str,
    backend: str,
    *,
    settings: BatchSettings,
    records: int,
    rounds: int,
    region: str,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """results.json's ``batch`` block."""
    from lambda_common.cpu import default_threads, visible_cpus

    threads = default_threads(settings.memory_mb, visible_cpus())
    progress(
        f"batch: {records} records a batch, the batch function at {settings.memory_mb} MB -> {threads} "
        "thread(s), S3 on moto"
    )
    got = measure(
        model_dir, model_id, backend, threads=threads, records=records, rounds=rounds, progress=progress
    )
    return summarise(got, model_id, backend, settings, threads, region)


def summarise(
    got: dict[str, Any], model_id: str, backend: str, settings: BatchSettings, threads: int, region: str
) -> dict[str, Any]:
    """results.json's ``batch`` block from the worker's figures (tokens, records, batch_s, online_s)."""
    rounds = len(got["batch_s"])
    tokens = int(got["tokens"])
    batch = summarize([tokens / s for s in got["batch_s"]])
    online = summarize([tokens / s for s in got["online_s"]])
    per_record = tokens / int(got["records"])
    usd, cost_method = projected_usd_per_million(batch["median"], per_record, settings, region)
    return {
        "model": model_id,
        "backend": backend,
        "memory_mb": settings.memory_mb,
        "threads": threads,
        "records": int(got["records"]),
        "tokens": tokens,
        "tokens_per_record": per_record,
        "rounds": rounds,
        "tokens_per_s_per_function": batch["median"],
        "online_tokens_per_s": online["median"],
        "vs_online_tokens_per_s": batch["median"] / online["median"],
        "usd_per_million_tokens_projected": usd,
        "method": METHOD.format(
            records=int(got["records"]), tokens_per_record=per_record, threads=threads, rounds=rounds
        ),
        "cost_method": cost_method,
        "spread": {"tokens_per_s_per_function": batch, "online_tokens_per_s": online},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_bench", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    work = sub.add_parser("worker", help="run the measurement in this process and write its figures")
    work.add_argument("--model-dir", required=True, help="the folder the handlers load (ONNX export)")
    work.add_argument("--model-id", required=True)
    work.add_argument("--backend", default="onnx", choices=("onnx", "torch"))
    work.add_argument("--threads", type=int, default=1)
    work.add_argument("--records", type=int, default=500)
    work.add_argument("--rounds", type=int, default=5)
    work.add_argument("--out", type=Path, required=True, help="where the figures go (JSON)")
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(worker(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

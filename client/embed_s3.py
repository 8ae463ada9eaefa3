"""Bulk embedding runs (``python -m client embed-s3``): start, follow, summarise, price, estimate.

A run embeds one JSON Lines or CSV object under the stack's input prefix into
Parquet files under an output folder (docs/batch.md). This module:

- finds the deployment from the stack's outputs (or takes the names given);
- builds the state machine's input (format, input key, output prefix, options)
  and refuses, before starting, what the state machine would refuse;
- follows the Map run with DescribeMapRun (items done, failed, elapsed, ETA;
  tokens estimated from the items done until the results give the exact sum);
- summarises the run from the ResultWriter's files under ``<output>results/``
  (tokens, bad records, failed batches with their error);
- prices it from the batch function's REPORT records in CloudWatch Logs over
  the run's time (benchmarks.lambda_logs, benchmarks.cost_model);
- estimates a run before starting it from a sample of the input and a
  throughput figure whose source it names.

Every AWS call goes through clients made from one boto3 session, so tests
pass moto's or stubbed ones.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from benchmarks.cost_model import LogCost, Tokens, Workload, estimate, price, usd
from benchmarks.lambda_logs import log_group_of, report_records, shape_of
from benchmarks.prices import CostInputError, load_prices
from client.calls import ClientUsageError

Format = Literal["jsonl", "csv"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv")
OUTPUT_KEYS = {
    "bucket": "BatchEmbeddingsBucket",
    "state_machine": "BatchEmbeddingsStateMachineArn",
    "function": "BatchEmbeddingsFunctionName",
    "input_prefix": "BatchEmbeddingsInputPrefix",
    "output_prefix": "BatchEmbeddingsOutputPrefix",
}
"""The stack outputs of stacks/batch_embeddings.py (same names; a test keeps them in step)."""
CHARS_PER_TOKEN = 4.0
"""Characters per token assumed for an estimate: the client has no tokenizer (English text with
BERT-style WordPiece vocabularies runs about 4 to 4.5); the run's results give the exact count."""
SAMPLE_BYTES = 1_048_576
RESULTS_FOLDER = "results"
RESULTS_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "results.json"
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<key>.*)$")


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, *, what: str) -> S3Location:
        match = S3_URI.match(uri)
        if match is None:
            raise ClientUsageError(f"{what} must be an s3://bucket/key URI, got {uri!r}")
        return cls(match["bucket"], match["key"])

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Deployment:
    """What a run needs to know about the deployed bulk embedding part."""

    bucket: str
    state_machine_arn: str
    function_name: str
    input_prefix: str
    output_prefix: str

    @classmethod
    def from_stack(cls, cloudformation: Any, stack: str) -> Deployment:
        try:
            (described,) = cloudformation.describe_stacks(StackName=stack)["Stacks"]
        except Exception as exc:  # botocore's ClientError or EndpointConnectionError
            raise ClientUsageError(f"cannot read stack {stack!r}: {exc}") from None
        outputs = {item["OutputKey"]: item["OutputValue"] for item in described.get("Outputs", [])}
        missing = [key for key in OUTPUT_KEYS.values() if key not in outputs]
        if missing:
            raise ClientUsageError(
                f"stack {stack!r} has no bulk embedding outputs ({', '.join(missing)}): deploy it with "
                "-c batch_embeddings=true first"
            )
        return cls(
            bucket=outputs[OUTPUT_KEYS["bucket"]],
            state_machine_arn=outputs[OUTPUT_KEYS["state_machine"]],
            function_name=outputs[OUTPUT_KEYS["function"]],
            input_prefix=outputs[OUTPUT_KEYS["input_prefix"]],
            output_prefix=outputs[OUTPUT_KEYS["output_prefix"]],
        )


@dataclass(frozen=True)
class RunOptions:
    id_field: str = "id"
    text_field: str = "text"
    prompt_name: str | None = None
    normalize: bool = True
    truncate: bool | None = None
    dimensions: int | None = None

    def as_json(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "id_field": self.id_field,
            "text_field": self.text_field,
            "normalize": self.normalize,
        }
        for name in ("prompt_name", "truncate", "dimensions"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return options


def guess_format(key: str) -> Format:
    lowered = key.lower()
    if lowered.endswith((".jsonl", ".ndjson", ".jsonl.txt")):
        return "jsonl"
    if lowered.endswith((".csv", ".tsv.csv")):
        return "csv"
    raise ClientUsageError(f"cannot tell the format of {key!r} from its name: pass --format jsonl or csv")


def run_input(
    deployment: Deployment, source: S3Location, output: S3Location, fmt: Format, options: RunOptions
) -> dict[str, Any]:
    """The state machine's input, checked as the state machine checks it (and more clearly)."""
    if source.bucket != deployment.bucket or not source.key.startswith(deployment.input_prefix):
        raise ClientUsageError(
            f"--input must be under s3://{deployment.bucket}/{deployment.input_prefix} (the only prefix the "
            f"state machine may read), got {source}; copy it there with aws s3 cp"
        )
    prefix = output.key if output.key.endswith("/") else output.key + "/"
    if (
        output.bucket != deployment.bucket
        or not prefix.startswith(deployment.output_prefix)
        or prefix == deployment.output_prefix
    ):
        raise ClientUsageError(
            f"--output must be a folder under s3://{deployment.bucket}/{deployment.output_prefix} "
            "(one per run, "
            f"e.g. s3://{deployment.bucket}/{deployment.output_prefix}my-run/), got {output}"
        )
    if fmt not in FORMATS:
        raise ClientUsageError(f"--format must be jsonl or csv, got {fmt!r}")
    return {
        "format": fmt,
        "input": {"key": source.key},
        "output": {"prefix": prefix},
        "options": options.as_json(),
    }


# ------------------------------------------------------------------ progress


@dataclass(frozen=True)
class Progress:
    """One look at a running Map run."""

    done: int
    failed: int
    total: int
    elapsed_s: float
    tokens_per_item: float | None = None

    @property
    def eta_s(self) -> float | None:
        finished = self.done + self.failed
        if finished == 0 or self.total == 0:
            return None
        return self.elapsed_s * (self.total - finished) / finished

    def line(self, width: int = 24) -> str:
        fraction = (self.done + self.failed) / self.total if self.total else 0.0
        filled = min(width, int(fraction * width))
        bar = "#" * filled + "." * (width - filled)
        parts = [f"[{bar}] {fraction:4.0%}", f"{self.done:,}/{self.total:,} items"]
        if self.tokens_per_item is not None:
            parts.append(f"~{_compact(self.done * self.tokens_per_item)} tokens")
        parts.append(f"{self.failed:,} failed")
        parts.append(f"{_duration(self.elapsed_s)} elapsed")
        eta = self.eta_s
        parts.append(f"ETA {_duration(eta)}" if eta is not None else "ETA --")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _compact(value: float) -> str:
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= threshold:
            return f"{value / threshold:.1f}{suffix}"
    return f"{value:.0f}"


def map_run_progress(
    sfn: Any, execution_arn: str, started: float, tokens_per_item: float | None
) -> Progress | None:
    runs = sfn.list_map_runs(executionArn=execution_arn).get("mapRuns", [])
    if not runs:
        return None
    counts = sfn.describe_map_run(mapRunArn=runs[0]["mapRunArn"])["itemCounts"]
    failed = int(counts.get("failed", 0)) + int(counts.get("timedOut", 0)) + int(counts.get("aborted", 0))
    return Progress(
        done=int(counts.get("succeeded", 0)),
        failed=failed,
        total=int(counts.get("total", 0)),
        elapsed_s=time.monotonic() - started,
        tokens_per_item=tokens_per_item,
    )


# ------------------------------------------------------------------ results


@dataclass
class RunSummary:
    """What the ResultWriter's files say about a finished run."""

    batches: int = 0
    embedded: int = 0
    tokens: int = 0
    bad_records: int = 0
    bad_examples: list[dict[str, Any]] = field(default_factory=list)
    failed_batches: list[dict[str, Any]] = field(default_factory=list)

    def lines(self, output: S3Location) -> list[str]:
        lines = [
            f"vectors:  {output}vectors/ ({self.embedded:,} records, {self.tokens:,} tokens; "
            "Parquet: id, vector)",
            f"errors:   {output}errors/ ({self.bad_records:,} bad records, each with its reason)",
            f"results:  {output}{RESULTS_FOLDER}/ (one record per batch, Step Functions' ResultWriter)",
        ]
        for example in self.bad_examples[:10]:
            lines.append(f"  bad record at item {example['item']} (id {example['id']}): {example['reason']}")
        if self.failed_batches:
            lines.append(f"{len(self.failed_batches)} batches failed after their retries:")
            for failure in self.failed_batches[:20]:
                lines.append(f"  items {failure['items']}: {failure['error']}: {failure['cause'][:200]}")
            lines.append(
                "run the same command again to embed only what is missing (written batches are skipped)"
            )
        return lines


def read_results(s3: Any, execution_output: Any) -> RunSummary:
    """Sum the child outputs listed by the ResultWriter's manifest.

    A Map without a ResultWriter returns the child outputs themselves: those are summed as they are.
    """
    summary = RunSummary()
    if isinstance(execution_output, list):
        for result in execution_output:
            summary.batches += 1
            _add(summary, result if isinstance(result, dict) else {})
        return summary
    details = execution_output.get("ResultWriterDetails") if isinstance(execution_output, dict) else None
    if not isinstance(details, dict):
        return summary
    manifest = json.loads(s3.get_object(Bucket=details["Bucket"], Key=details["Key"])["Body"].read())
    bucket = manifest.get("DestinationBucket", details["Bucket"])
    for status, files in manifest.get("ResultFiles", {}).items():
        for entry in files:
            records = json.loads(s3.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read())
            for record in records:
                summary.batches += 1
                if status == "SUCCEEDED":
                    _add(summary, json.loads(record.get("Output") or "{}"))
                else:
                    summary.failed_batches.append(_failure(record))
    return summary


def _add(summary: RunSummary, result: Mapping[str, Any]) -> None:
    summary.embedded += int(result.get("embedded", 0))
    summary.tokens += int(result.get("tokens", 0))
    summary.bad_records += int(result.get("bad_records", 0))
    summary.bad_examples.extend(result.get("bad_records_listed", []))


def _failure(record: Mapping[str, Any]) -> dict[str, Any]:
    items: Any = "?"
    try:
        batch = json.loads(record.get("Input") or "{}").get("Items", [])
        if batch:
            items = f"{batch[0]['index']}-{batch[-1]['index']}"
    except (ValueError, KeyError, TypeError):
        pass
    return {
        "items": items,
        "error": record.get("Error", record.get("Status", "")),
        "cause": record.get("Cause", ""),
    }


# ------------------------------------------------------------------ cost


def run_cost(
    lambda_client: Any,
    logs: Any,
    function_name: str,
    start: datetime,
    stop: datetime,
    *,
    expected: int,
    wait_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
) -> LogCost:
    """The batch function's REPORT records between ``start`` and ``stop``, priced.

    CloudWatch Logs receives REPORT records a little after each invocation ends: the records are
    read again until at least ``expected`` are there or ``wait_s`` has passed.
    """
    config = lambda_client.get_function_configuration(FunctionName=function_name)
    shape = shape_of(config)
    group = log_group_of(config, function_name)
    deadline = time.monotonic() + wait_s
    while True:
        # A minute past ``stop``: the last invocations' REPORT records are stamped when they end.
        records = report_records(logs, group, start, stop + timedelta(minutes=1))
        if len(records) >= expected or time.monotonic() >= deadline:
            break
        sleep(5)
    if not records:
        raise CostInputError(f"no REPORT records of {function_name} in {group} for this run (yet)")
    return price(records, shape, load_prices())


TRANSITIONS_PER_BATCH = 2
"""Step Functions state transitions a batch costs (its child workflow), plus RUN_TRANSITIONS per run."""
RUN_TRANSITIONS = 5
S3_REQUESTS_PER_BATCH = 2
"""One LIST (already written?) and one PUT (the vectors) per batch."""


@dataclass(frozen=True)
class RunOverheads:
    """What a run costs besides the batch function: Step Functions transitions and S3 requests."""

    batches: int
    transitions: int
    s3_requests: int
    transitions_usd: Decimal
    s3_usd: Decimal

    @property
    def total(self) -> Decimal:
        return self.transitions_usd + self.s3_usd

    def describe(self) -> str:
        return (
            f"{usd(self.transitions_usd)} for {self.transitions:,} Step Functions state transitions and "
            f"{usd(self.s3_usd)} for {self.s3_requests:,} S3 requests "
            f"(estimated from the {self.batches:,} batches)"
        )


def run_overheads(batches: int, region: str) -> RunOverheads | None:
    """The run's transitions and S3 requests, priced; None where prices.json has no price for the region."""
    prices = load_prices().batch_runs.get(region)
    if prices is None:
        return None
    transitions = batches * TRANSITIONS_PER_BATCH + RUN_TRANSITIONS
    requests = batches * S3_REQUESTS_PER_BATCH
    return RunOverheads(
        batches, transitions, requests, transitions * prices.state_transition, requests * prices.s3_request
    )


def cost_lines(cost: LogCost, tokens: int, batches: int = 0) -> list[str]:
    lines = [
        f"cost:     {usd(cost.total)} for {len(cost.records):,} invocations of the batch function "
        f"({cost.gb_seconds:.1f} GB-s at {usd(cost.rate.gb_second)} per GB-s, from their REPORT records)",
    ]
    total = cost.total
    overheads = run_overheads(batches, cost.rate.region) if batches else None
    if overheads is not None:
        total += overheads.total
        lines.append(f"          + about {overheads.describe()} = {usd(total)}")
    else:
        lines.append(
            "          not included: Step Functions state transitions and S3 requests "
            f"(benchmarks/prices.json has none for {cost.rate.region}; docs/batch.md has the formula)"
        )
    if tokens:
        lines.append(f"          {usd(total / tokens * 1_000_000)} per million tokens")
    return lines


# ------------------------------------------------------------------ estimate


@dataclass(frozen=True)
class Throughput:
    tokens_per_s: float
    source: str


def measured_throughput(path: Path = RESULTS_DIR) -> Throughput:
    """The batch function's measured tokens/s from benchmarks/results.json (else the online function's)."""
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ClientUsageError(
            f"no throughput figure: cannot read {path} ({exc}); pass --tokens-per-s"
        ) from None
    batch = results.get("batch", {})
    if isinstance(batch, dict) and batch.get("tokens_per_s_per_function"):
        return Throughput(
            float(batch["tokens_per_s_per_function"]),
            f"{path.name} batch.tokens_per_s_per_function (one batch function with S3 I/O, "
            "measured by make bench)",
        )
    embeddings = results.get("embeddings", {})
    if isinstance(embeddings, dict) and embeddings.get("tokens_per_s"):
        return Throughput(
            float(embeddings["tokens_per_s"]),
            f"{path.name} embeddings.tokens_per_s ({embeddings.get('model', 'the bench model')}, "
            f"{embeddings.get('threads', '?')} thread(s), measured by make bench on its machine, "
            "not on Lambda)",
        )
    raise ClientUsageError(f"{path} has no embeddings throughput: run make bench, or pass --tokens-per-s")


@dataclass(frozen=True)
class Sample:
    object_bytes: int
    sample_bytes: int
    records: int
    text_chars: int

    @property
    def records_estimate(self) -> int:
        if self.records == 0:
            return 0
        return math.ceil(self.records * self.object_bytes / max(self.sample_bytes, 1))

    @property
    def tokens_per_record(self) -> float:
        return self.text_chars / max(self.records, 1) / CHARS_PER_TOKEN + 2  # plus [CLS] and [SEP]


def sample_input(s3: Any, source: S3Location, fmt: Format, text_field: str) -> Sample:
    size = int(s3.head_object(Bucket=source.bucket, Key=source.key)["ContentLength"])
    body = s3.get_object(Bucket=source.bucket, Key=source.key, Range=f"bytes=0-{SAMPLE_BYTES - 1}")[
        "Body"
    ].read()
    text = body.decode("utf-8", errors="replace")
    complete = text if len(body) >= size else text[: text.rfind("\n") + 1]
    records = 0
    chars = 0
    if fmt == "jsonl":
        for line in complete.splitlines():
            if not line.strip():
                continue
            records += 1
            try:
                value = json.loads(line).get(text_field, "")
            except (ValueError, AttributeError):
                value = ""
            chars += len(value) if isinstance(value, str) else 0
    else:
        import csv
        import io

        for row in csv.DictReader(io.StringIO(complete, newline="")):
            records += 1
            chars += len(row.get(text_field) or "")
    return Sample(object_bytes=size, sample_bytes=len(complete.encode()), records=records, text_chars=chars)


@dataclass(frozen=True)
class Projection:
    records: int
    tokens: int
    batches: int
    duration_s: float
    cost: Decimal
    """The batch function's compute and requests."""
    overheads: RunOverheads | None = None
    """Step Functions and S3, when prices.json has the region's prices."""

    @property
    def total(self) -> Decimal:
        return self.cost + (self.overheads.total if self.overheads is not None else Decimal(0))

    def lines(self, throughput: Throughput, memory_mb: int, concurrency: int) -> list[str]:
        return [
            f"input:    about {self.records:,} records, {self.tokens:,} tokens "
            f"({CHARS_PER_TOKEN:g} characters per token assumed from a sample of the object; "
            "the run reports the exact count)",
            f"speed:    {throughput.tokens_per_s:,.0f} tokens/s per function, from {throughput.source}",
            f"duration: about {_duration(self.duration_s)} with {concurrency} functions at once "
            f"({self.batches:,} batches), cold starts and Step Functions' own pace not included",
            f"cost:     about {usd(self.total)} (projection, not a bill): {usd(self.cost)} for the batch "
            f"function at {memory_mb} MB + "
            + (
                f"about {self.overheads.describe()}"
                if self.overheads is not None
                else "Step Functions transitions and S3 requests, not priced here (no prices for the region)"
            ),
        ]


def project(
    sample: Sample,
    throughput: Throughput,
    *,
    memory_mb: int,
    concurrency: int,
    items_per_batch: int,
    region: str,
    architecture: str,
) -> Projection:
    records = sample.records_estimate
    tokens = math.ceil(records * sample.tokens_per_record)
    batches = max(1, math.ceil(records / items_per_batch))
    tokens_per_batch = max(1, tokens // batches)
    per_batch_ms = Decimal(tokens_per_batch) / Decimal(str(throughput.tokens_per_s)) * 1000
    cost = estimate(
        Workload(
            memory_mb=memory_mb,
            duration_ms=per_batch_ms,
            requests=batches,
            region=region,
            architecture=architecture,
            tokens=Tokens(input=tokens_per_batch, input_per_s=Decimal(str(throughput.tokens_per_s))),
        ),
        load_prices(),
    )
    waves = math.ceil(batches / max(1, concurrency))
    return Projection(
        records=records,
        tokens=tokens,
        batches=batches,
        duration_s=waves * float(per_batch_ms) / 1000,
        cost=cost.total,
        overheads=run_overheads(batches, region),
    )


def summarise_execution(described: Mapping[str, Any]) -> Any:
    output = described.get("output")
    return json.loads(output) if isinstance(output, str) and output else {}

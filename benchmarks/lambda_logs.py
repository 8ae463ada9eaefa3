"""Lambda's per-invocation REPORT records, and what the invocations they describe cost.

Lambda writes one record per invocation to the function's log group, in the
function's log format:

* plain text (CloudWatch separates the fields with tabs)::

    REPORT RequestId: 3f1c...  Duration: 102.25 ms  Billed Duration: 103 ms  Memory Size: 2048 MB
    Max Memory Used: 180 MB  Init Duration: 812.54 ms

* JSON (``LoggingConfig.LogFormat = JSON``), a ``platform.report`` event::

    {"time": "...", "type": "platform.report",
     "record": {"requestId": "...", "metrics": {"durationMs": 102.25, "billedDurationMs": 103,
                "memorySizeMB": 2048, "maxMemoryUsedMB": 180, "initDurationMs": 812.54},
                "status": "success"}}

``Init Duration`` / ``initDurationMs`` appears only on a cold start. For
container images the init phase has always been billed and Billed Duration
includes it; since 2025-08-01 that holds for every function. The cost here
uses Billed Duration as Lambda reports it, so it is what the account paid.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from benchmarks.cost import (
    MB_PER_GB,
    MS_PER_S,
    CostInputError,
    LambdaRate,
    PriceBook,
    normalise_architecture,
    plain,
    tiered_compute_cost,
    usd,
)

REPORT_FILTER_PATTERN = '?"REPORT RequestId" ?"platform.report"'
"""CloudWatch Logs filter pattern matching both the text and the JSON record."""

_REPORT = re.compile(r"REPORT\s+RequestId:\s*(?P<id>[^\s]+)(?P<fields>.*)", re.DOTALL)
_FIELD = re.compile(r"(?P<name>[A-Za-z][A-Za-z ]*?):\s*(?P<value>\d+(?:\.\d+)?)\s*(?:ms|MB)")
"""``Name: value unit`` pairs, in any order (the emulator puts Init Duration first)."""


@dataclass(frozen=True)
class ReportRecord:
    """One invocation as Lambda reported it."""

    request_id: str
    duration_ms: Decimal
    billed_ms: int
    memory_mb: int
    max_memory_used_mb: int | None = None
    init_ms: Decimal | None = None
    status: str | None = None
    source_format: str = "text"

    @property
    def cold(self) -> bool:
        return self.init_ms is not None

    @property
    def init_billed(self) -> bool:
        """Whether Billed Duration covers the init phase (true for images, and for all since 2025-08)."""
        if self.init_ms is None:
            return False
        both = (self.duration_ms + self.init_ms).to_integral_value(rounding=ROUND_CEILING)
        return self.billed_ms >= int(both)

    @property
    def gb_seconds(self) -> Decimal:
        return Decimal(self.memory_mb) / MB_PER_GB * Decimal(self.billed_ms) / MS_PER_S


def parse_line(line: str) -> ReportRecord | None:
    """A REPORT record from one log message (text or JSON), or None if it is not one."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("{"):
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            return _from_json(event)
    match = _REPORT.search(text)
    if match is None:
        return None
    fields = {f["name"].strip(): f["value"] for f in _FIELD.finditer(match["fields"])}
    missing = [name for name in ("Duration", "Billed Duration", "Memory Size") if name not in fields]
    if missing:
        raise CostInputError(f"REPORT line without {', '.join(missing)}: {text[:200]}")
    return ReportRecord(
        request_id=match["id"],
        duration_ms=Decimal(fields["Duration"]),
        billed_ms=int(Decimal(fields["Billed Duration"])),
        memory_mb=int(fields["Memory Size"]),
        max_memory_used_mb=int(fields["Max Memory Used"]) if "Max Memory Used" in fields else None,
        init_ms=Decimal(fields["Init Duration"]) if "Init Duration" in fields else None,
        source_format="text",
    )


def _from_json(event: dict[str, Any]) -> ReportRecord | None:
    if event.get("type") != "platform.report":
        # A CloudWatch event wrapper ({"message": "..."}) holds the record as text.
        message = event.get("message")
        return parse_line(message) if isinstance(message, str) else None
    record = event.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise CostInputError(f"platform.report record without metrics: {json.dumps(event)[:200]}")
    metrics = record["metrics"]
    try:
        return ReportRecord(
            request_id=str(record.get("requestId", "")),
            duration_ms=Decimal(str(metrics["durationMs"])),
            billed_ms=int(Decimal(str(metrics["billedDurationMs"]))),
            memory_mb=int(Decimal(str(metrics["memorySizeMB"]))),
            max_memory_used_mb=(
                int(Decimal(str(metrics["maxMemoryUsedMB"]))) if "maxMemoryUsedMB" in metrics else None
            ),
            init_ms=Decimal(str(metrics["initDurationMs"]))
            if metrics.get("initDurationMs") is not None
            else None,
            status=record.get("status"),
            source_format="json",
        )
    except KeyError as exc:
        raise CostInputError(f"platform.report record lacks metrics.{exc.args[0]}") from None


def parse_lines(lines: Iterable[str]) -> list[ReportRecord]:
    """Every REPORT record among the messages (other log lines are skipped)."""
    return [record for line in lines if (record := parse_line(line)) is not None]


def split_messages(text: str) -> list[str]:
    """Messages of a saved log: `aws logs filter-log-events` output, a JSON array, or one per line."""
    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError:
            document = None
        if isinstance(document, dict) and isinstance(document.get("events"), list):
            return [str(event.get("message", "")) for event in document["events"]]
        if isinstance(document, list):
            return [json.dumps(item) if isinstance(item, dict) else str(item) for item in document]
        if isinstance(document, dict):
            return [json.dumps(document)]
    return text.splitlines()


# ---------------------------------------------------------------------------
# CloudWatch Logs


@dataclass(frozen=True)
class FunctionShape:
    """What the REPORT record does not say but the bill depends on."""

    region: str
    architecture: str
    ephemeral_mb: int = 512
    assumed: bool = True


def from_cloudwatch(
    function: str,
    *,
    since_hours: float = 24,
    log_group: str | None = None,
    region: str | None = None,
    logs_client: Any = None,
    lambda_client: Any = None,
    now: datetime | None = None,
) -> tuple[list[ReportRecord], FunctionShape, str]:
    """REPORT records of a deployed function over the last ``since_hours``, and its configuration.

    Needs AWS credentials allowed ``lambda:GetFunctionConfiguration`` and
    ``logs:FilterLogEvents``. The architecture and ephemeral storage come from
    the function's configuration, the region from its ARN.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = boto3.session.Session(region_name=region)
        lam = lambda_client or session.client("lambda")
        logs = logs_client or session.client("logs")
        config = lam.get_function_configuration(FunctionName=function)
    except (BotoCoreError, ClientError) as exc:
        raise CostInputError(f"cannot read the configuration of function {function!r}: {exc}") from None
    arn_region = str(config["FunctionArn"]).split(":")[3]
    shape = FunctionShape(
        region=arn_region,
        architecture=normalise_architecture((config.get("Architectures") or ["x86_64"])[0]),
        ephemeral_mb=int(config.get("EphemeralStorage", {}).get("Size", 512)),
        assumed=False,
    )
    group = log_group or (config.get("LoggingConfig") or {}).get("LogGroup") or f"/aws/lambda/{function}"
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=since_hours)
    try:
        records = parse_lines(
            _messages(
                logs,
                logGroupName=group,
                filterPattern=REPORT_FILTER_PATTERN,
                startTime=int(start.timestamp() * 1000),
                endTime=int(end.timestamp() * 1000),
            )
        )
    except (BotoCoreError, ClientError) as exc:
        raise CostInputError(f"cannot read log group {group}: {exc}") from None
    return records, shape, f"{group} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _messages(logs: Any, **query: Any) -> Iterator[str]:
    for page in logs.get_paginator("filter_log_events").paginate(**query):
        for event in page.get("events", []):
            yield str(event.get("message", ""))


# ---------------------------------------------------------------------------
# Pricing the records


@dataclass(frozen=True)
class LogCost:
    records: tuple[ReportRecord, ...]
    shape: FunctionShape
    rate: LambdaRate
    gb_seconds: Decimal
    compute: Decimal
    request_cost: Decimal
    ephemeral_gb_seconds: Decimal
    ephemeral: Decimal
    init_gb_seconds: Decimal

    @property
    def total(self) -> Decimal:
        return self.compute + self.request_cost + self.ephemeral

    @property
    def per_invocation(self) -> Decimal:
        return self.total / len(self.records)

    @property
    def cold_starts(self) -> list[ReportRecord]:
        return [r for r in self.records if r.cold]

    @property
    def init_cost(self) -> Decimal:
        """Compute spent in billed init phases (priced at the average GB-second price)."""
        return self.compute * self.init_gb_seconds / self.gb_seconds if self.gb_seconds else Decimal(0)

    def text(self, origin: str) -> str:
        n = len(self.records)
        cold = self.cold_starts
        memories = sorted({r.memory_mb for r in self.records})
        assumed = " (assumed: pass --region/--arch/--ephemeral-mb)" if self.shape.assumed else ""
        billed_ms = sum(r.billed_ms for r in self.records)
        lines = [
            f"{n:,} invocations ({len(cold):,} cold) in {origin}",
            f"  memory {', '.join(f'{m:,}' for m in memories)} MB, "
            f"{self.rate.architecture} in {self.rate.region}, "
            f"{self.shape.ephemeral_mb:,} MB ephemeral storage{assumed}",
            f"  billed      {billed_ms:,} ms = {plain(self.gb_seconds)} GB-s",
            f"  compute     {plain(self.gb_seconds)} GB-s x ${plain(self.rate.gb_second)}/GB-s "
            f"= {usd(self.compute)}",
            f"  requests    {n:,} x {usd(self.rate.request * 1_000_000)}/M = {usd(self.request_cost)}",
            f"  ephemeral   {plain(self.ephemeral_gb_seconds)} GB-s x ${plain(self.rate.ephemeral_gb_second)}"
            f" = {usd(self.ephemeral)}",
            f"  total       {usd(self.total)}  ({usd(self.per_invocation)} per invocation)",
        ]
        durations = [float(r.duration_ms) for r in self.records]
        lines.append(
            f"  Duration: median {statistics.median(durations):,.1f} ms, max {max(durations):,.1f} ms; "
            f"peak memory used {max((r.max_memory_used_mb or 0) for r in self.records):,} MB"
        )
        if cold:
            inits = [float(r.init_ms or 0) for r in cold]
            billed_inits = sum(1 for r in cold if r.init_billed)
            lines.append(
                f"  Cold starts: {len(cold):,}, Init Duration median {statistics.median(inits):,.1f} ms, "
                f"max {max(inits):,.1f} ms; init billed in {billed_inits} of {len(cold)} "
                f"(it is inside Billed Duration) = {usd(self.init_cost)} of the compute"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "invocations": len(self.records),
            "cold_starts": len(self.cold_starts),
            "region": self.rate.region,
            "architecture": self.rate.architecture,
            "ephemeral_mb": self.shape.ephemeral_mb,
            "billed_ms": sum(r.billed_ms for r in self.records),
            "gb_seconds": str(self.gb_seconds),
            "compute_usd": str(self.compute),
            "requests_usd": str(self.request_cost),
            "ephemeral_usd": str(self.ephemeral),
            "total_usd": str(self.total),
            "per_invocation_usd": str(self.per_invocation),
            "init_gb_seconds": str(self.init_gb_seconds),
            "init_usd": str(self.init_cost),
        }


def price(records: Iterable[ReportRecord], shape: FunctionShape, prices: PriceBook) -> LogCost:
    """What the reported invocations cost (no free tier: it is shared by the whole account)."""
    items = tuple(records)
    if not items:
        raise CostInputError("no REPORT records to price")
    low, high = prices.ephemeral_mb_range
    if not low <= shape.ephemeral_mb <= high:
        raise CostInputError(
            f"ephemeral storage must be between {low} and {high} MB, got {shape.ephemeral_mb}"
        )
    rate = prices.rate(shape.region, shape.architecture)
    gb_seconds = sum((r.gb_seconds for r in items), Decimal(0))
    seconds = sum((Decimal(r.billed_ms) / MS_PER_S for r in items), Decimal(0))
    extra_gb = Decimal(shape.ephemeral_mb - prices.ephemeral_included_mb) / MB_PER_GB
    init_gb_seconds = sum(
        (
            Decimal(r.memory_mb) / MB_PER_GB * (r.init_ms or Decimal(0)) / MS_PER_S
            for r in items
            if r.init_billed
        ),
        Decimal(0),
    )
    return LogCost(
        records=items,
        shape=shape,
        rate=rate,
        gb_seconds=gb_seconds,
        compute=tiered_compute_cost(gb_seconds, rate),
        request_cost=len(items) * rate.request,
        ephemeral_gb_seconds=extra_gb * seconds,
        ephemeral=extra_gb * seconds * rate.ephemeral_gb_second,
        init_gb_seconds=init_gb_seconds,
    )

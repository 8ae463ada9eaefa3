"""Lambda's platform records in a function's log: REPORT and INIT_REPORT, in both log formats.

The one parser of these records: the cost model prices them, and the client
package (``python -m client``) reads them from an invoke's log tail. It
imports nothing from ``client/`` or ``local/`` (the import graph runs
client -> benchmarks, never back).

Lambda writes one REPORT record per invocation, in the function's log format:

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
includes it; since 2025-08-01 that holds for every function.

SnapStart (https://docs.aws.amazon.com/lambda/latest/dg/snapstart-monitoring.html):
a restored environment's REPORT has no Init Duration but ``Restore Duration``
and ``Billed Restore Duration`` (JSON: ``restoreDurationMs``,
``billedRestoreDurationMs``); the version's init, run when it was published,
is in an INIT_REPORT record::

    INIT_REPORT Init Duration: 1234.56 ms  Phase: init  Status: success

or, in JSON, a ``platform.initReport`` event (Telemetry API schema:
``record.initializationType``, ``phase``, ``status``, ``metrics.durationMs``,
``errorType`` on failure). INIT_REPORT also reports inits that failed or
timed out (``Phase: invoke`` when Lambda re-ran the init inside the first
invoke).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, Decimal
from typing import Any

from benchmarks.prices import MB_PER_GB, MS_PER_S, CostInputError, normalise_architecture

REPORT_FILTER_PATTERN = '?"REPORT RequestId" ?"platform.report"'
"""CloudWatch Logs filter pattern matching both the text and the JSON REPORT record."""
INIT_REPORT_FILTER_PATTERN = '?"INIT_REPORT" ?"platform.initReport"'
"""CloudWatch Logs filter pattern matching both the text and the JSON INIT_REPORT record."""

_REPORT = re.compile(r"(?<![A-Z_])REPORT\s+RequestId:\s*(?P<id>[^\s]+)(?P<fields>.*)", re.DOTALL)
_INIT_REPORT = re.compile(r"(?<![A-Za-z_])INIT_REPORT\s+(?P<fields>Init Duration:.*)", re.DOTALL)
_FIELD = re.compile(r"(?P<name>[A-Za-z][A-Za-z ]*?):\s*(?P<value>\d+(?:\.\d+)?)\s*(?:ms|MB)")
"""``Name: value unit`` pairs, in any order (the emulator puts Init Duration first)."""
_WORD_FIELD = re.compile(r"(?P<name>Phase|Status|Error Type):\s*(?P<value>[^\s]+)")
"""The words INIT_REPORT (and a failed invoke's REPORT) carry: ``Phase: init``, ``Status: error``..."""


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
    restore_ms: Decimal | None = None
    """SnapStart: restoring the snapshot, loading the runtime and the after-restore hooks."""
    billed_restore_ms: int | None = None
    """SnapStart: the part of the restore that is billed as duration (runtime load and hooks)."""
    error_type: str | None = None

    @property
    def cold(self) -> bool:
        """An on-demand cold start: the init ran for this invocation."""
        return self.init_ms is not None

    @property
    def restored(self) -> bool:
        """A new environment restored from a SnapStart snapshot (no init ran for it)."""
        return self.restore_ms is not None

    @property
    def init_billed(self) -> bool:
        """Whether Billed Duration covers the init phase (true for images, and for all since 2025-08)."""
        if self.init_ms is None:
            return False
        both = (self.duration_ms + self.init_ms).to_integral_value(rounding=ROUND_CEILING)
        return self.billed_ms >= int(both)

    @property
    def billed_total_ms(self) -> int:
        """Everything billed as duration: Billed Duration plus Billed Restore Duration."""
        return self.billed_ms + (self.billed_restore_ms or 0)

    @property
    def gb_seconds(self) -> Decimal:
        return Decimal(self.memory_mb) / MB_PER_GB * Decimal(self.billed_total_ms) / MS_PER_S


@dataclass(frozen=True)
class InitReport:
    """One INIT_REPORT record: an init phase reported on its own (SnapStart's, or one that failed)."""

    duration_ms: Decimal
    phase: str | None = None
    """``init``, ``invoke`` (a suppressed init re-run inside the first invoke) or ``snap-start``."""
    status: str | None = None
    error_type: str | None = None
    initialization_type: str | None = None
    """JSON records only: ``on-demand``, ``provisioned-concurrency``, ``snap-start``."""
    source_format: str = "text"

    @property
    def failed(self) -> bool:
        return self.status is not None and self.status != "success"


@dataclass(frozen=True)
class LogRecords:
    """The REPORT and INIT_REPORT records found in a log, in order."""

    reports: tuple[ReportRecord, ...] = ()
    inits: tuple[InitReport, ...] = ()

    def report_for(self, request_id: str) -> ReportRecord | None:
        return next((r for r in self.reports if r.request_id == request_id), None)


def parse_record(line: str) -> ReportRecord | InitReport | None:
    """The REPORT or INIT_REPORT record in one log message (text or JSON), or None if it holds neither."""
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
    init = _INIT_REPORT.search(text)
    if init is not None:
        return _init_from_text(init["fields"], text)
    match = _REPORT.search(text)
    if match is None:
        return None
    return _report_from_text(match["id"], match["fields"], text)


def parse_line(line: str) -> ReportRecord | None:
    """A REPORT record from one log message (text or JSON), or None if it is not one."""
    record = parse_record(line)
    return record if isinstance(record, ReportRecord) else None


def parse_lines(lines: Iterable[str]) -> list[ReportRecord]:
    """Every REPORT record among the messages (other log lines are skipped)."""
    return [record for line in lines if (record := parse_line(line)) is not None]


def parse_log(lines: Iterable[str]) -> LogRecords:
    """Every REPORT and INIT_REPORT record among the messages, in order."""
    reports: list[ReportRecord] = []
    inits: list[InitReport] = []
    for line in lines:
        record = parse_record(line)
        if isinstance(record, ReportRecord):
            reports.append(record)
        elif isinstance(record, InitReport):
            inits.append(record)
    return LogRecords(reports=tuple(reports), inits=tuple(inits))


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


def _words(fields: str) -> dict[str, str]:
    return {f["name"]: f["value"] for f in _WORD_FIELD.finditer(fields)}


def _report_from_text(request_id: str, fields_text: str, line: str) -> ReportRecord:
    fields = {f["name"].strip(): f["value"] for f in _FIELD.finditer(fields_text)}
    missing = [name for name in ("Duration", "Billed Duration", "Memory Size") if name not in fields]
    if missing:
        raise CostInputError(f"REPORT line without {', '.join(missing)}: {line[:200]}")
    words = _words(fields_text)
    return ReportRecord(
        request_id=request_id,
        duration_ms=Decimal(fields["Duration"]),
        billed_ms=int(Decimal(fields["Billed Duration"])),
        memory_mb=int(fields["Memory Size"]),
        max_memory_used_mb=int(fields["Max Memory Used"]) if "Max Memory Used" in fields else None,
        init_ms=Decimal(fields["Init Duration"]) if "Init Duration" in fields else None,
        status=words.get("Status"),
        source_format="text",
        restore_ms=Decimal(fields["Restore Duration"]) if "Restore Duration" in fields else None,
        billed_restore_ms=(
            int(Decimal(fields["Billed Restore Duration"])) if "Billed Restore Duration" in fields else None
        ),
        error_type=words.get("Error Type"),
    )


def _init_from_text(fields_text: str, line: str) -> InitReport:
    fields = {f["name"].strip(): f["value"] for f in _FIELD.finditer(fields_text)}
    if "Init Duration" not in fields:  # "Init Duration:" without a number and unit
        raise CostInputError(f"INIT_REPORT line without Init Duration: {line[:200]}")
    words = _words(fields_text)
    return InitReport(
        duration_ms=Decimal(fields["Init Duration"]),
        phase=words.get("Phase"),
        status=words.get("Status"),
        error_type=words.get("Error Type"),
        source_format="text",
    )


def _optional_decimal(metrics: dict[str, Any], key: str) -> Decimal | None:
    value = metrics.get(key)
    return None if value is None else Decimal(str(value))


def _from_json(event: dict[str, Any]) -> ReportRecord | InitReport | None:
    kind = event.get("type")
    if kind not in ("platform.report", "platform.initReport"):
        # A CloudWatch event wrapper ({"message": "..."}) holds the record as text.
        message = event.get("message")
        return parse_record(message) if isinstance(message, str) else None
    record = event.get("record")
    if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
        raise CostInputError(f"{kind} record without metrics: {json.dumps(event)[:200]}")
    metrics = record["metrics"]
    try:
        if kind == "platform.initReport":
            return InitReport(
                duration_ms=Decimal(str(metrics["durationMs"])),
                phase=record.get("phase"),
                status=record.get("status"),
                error_type=record.get("errorType"),
                initialization_type=record.get("initializationType"),
                source_format="json",
            )
        billed_restore = _optional_decimal(metrics, "billedRestoreDurationMs")
        return ReportRecord(
            request_id=str(record.get("requestId", "")),
            duration_ms=Decimal(str(metrics["durationMs"])),
            billed_ms=int(Decimal(str(metrics["billedDurationMs"]))),
            memory_mb=int(Decimal(str(metrics["memorySizeMB"]))),
            max_memory_used_mb=(
                int(Decimal(str(metrics["maxMemoryUsedMB"]))) if "maxMemoryUsedMB" in metrics else None
            ),
            init_ms=_optional_decimal(metrics, "initDurationMs"),
            status=record.get("status"),
            source_format="json",
            restore_ms=_optional_decimal(metrics, "restoreDurationMs"),
            billed_restore_ms=None if billed_restore is None else int(billed_restore),
            error_type=record.get("errorType"),
        )
    except KeyError as exc:
        raise CostInputError(f"{kind} record lacks metrics.{exc.args[0]}") from None


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
    shape = shape_of(config)
    group = log_group or log_group_of(config, function)
    end = now or datetime.now(UTC)
    start = end - timedelta(hours=since_hours)
    try:
        records = report_records(logs, group, start, end)
    except (BotoCoreError, ClientError) as exc:
        raise CostInputError(f"cannot read log group {group}: {exc}") from None
    return records, shape, f"{group} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def shape_of(config: Mapping[str, Any]) -> FunctionShape:
    """The shape of a deployed function, from its ``get_function_configuration`` answer.

    The region comes from its ARN; architecture and ephemeral storage from its configuration.
    """
    return FunctionShape(
        region=str(config["FunctionArn"]).split(":")[3],
        architecture=normalise_architecture((config.get("Architectures") or ["x86_64"])[0]),
        ephemeral_mb=int((config.get("EphemeralStorage") or {}).get("Size", 512)),
        assumed=False,
    )


def report_records(logs: Any, group: str, start: datetime, end: datetime) -> list[ReportRecord]:
    """The REPORT records (text or JSON) of log group ``group`` between ``start`` and ``end``."""
    return parse_lines(
        messages(
            logs,
            logGroupName=group,
            filterPattern=REPORT_FILTER_PATTERN,
            startTime=int(start.timestamp() * 1000),
            endTime=int(end.timestamp() * 1000),
        )
    )


def log_group_of(config: Mapping[str, Any], function: str) -> str:
    """The function's log group: its LoggingConfig's, else Lambda's default ``/aws/lambda/<name>``."""
    group = (config.get("LoggingConfig") or {}).get("LogGroup")
    name = str(config.get("FunctionName") or function).split(":")[-1]
    return str(group) if group else f"/aws/lambda/{name}"


def messages(logs: Any, **query: Any) -> Iterator[str]:
    """Every message ``filter_log_events`` returns for the query, over all pages."""
    for _stream, message in events(logs, **query):
        yield message


def events(logs: Any, **query: Any) -> Iterator[tuple[str, str]]:
    """(log stream name, message) of every event ``filter_log_events`` returns, over all pages."""
    for page in logs.get_paginator("filter_log_events").paginate(**query):
        for event in page.get("events", []):
            yield str(event.get("logStreamName", "")), str(event.get("message", ""))

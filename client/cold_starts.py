"""Force N cold starts of a deployed function and measure them from the account's own records.

Two ways to get fresh execution environments, one per case:

* ``$LATEST`` (no qualifier): before each invoke, change one environment
  variable (``COLD_START_PROBE``) with ``UpdateFunctionConfiguration`` and wait
  until ``LastUpdateStatus`` is ``Successful``. Environments built for the old
  configuration are not used for the new one, so the next invoke starts a new
  environment. The function's environment is put back as it was at the end
  (even after an error); it changes the unpublished configuration only.
* a published version or an alias (``--qualifier live``): its configuration
  cannot change, so the N invokes are sent at once. Concurrent requests are
  each served by their own environment; the ones beyond the environments that
  are already warm need new ones (restored from the snapshot when the version
  has SnapStart, initialised from scratch otherwise). A warm environment that
  answers one of them is reported as warm, not counted as a cold start.

The figures come from Lambda itself: each invoke asks for its log tail
(``LogType=Tail``, the last 4 KB of the invocation's log), whose REPORT record
gives Init Duration (an on-demand cold start), Restore Duration and Billed
Restore Duration (a SnapStart restore), Duration and Billed Duration. When the
tail lacks the REPORT, the record is looked up in CloudWatch Logs by request
id. A SnapStart version's own init ran when the version was published: its
INIT_REPORT is looked up in the log group. The client measures the time to
the first byte of the answer and to the whole answer; an ``Invoke`` answer
is buffered, so the first byte is also the first token.

Parsing is ``benchmarks.lambda_logs``'s, the one shared parser.
"""

from __future__ import annotations

import base64
import contextlib
import json
import statistics
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from benchmarks import lambda_logs
from benchmarks.lambda_logs import InitReport, LogRecords, ReportRecord
from benchmarks.prices import CostInputError
from client.calls import ClientUsageError

PROBE_VARIABLE = "COLD_START_PROBE"
"""The environment variable changed before each invoke of $LATEST (and removed again at the end)."""
METHODS = ("auto", "update-config", "concurrent")
MAX_INVOKES = 50
UPDATE_TIMEOUT_S = 300.0
LOG_LOOKUP_ATTEMPTS = 6
LOG_LOOKUP_WAIT_S = 5.0
LATEST = "$LATEST"

Clock = Callable[[], float]
Sleep = Callable[[float], None]


class ColdStartError(ClientUsageError):
    """The measurement cannot go on; the message says why (reported without a traceback)."""


@dataclass(frozen=True)
class Target:
    """The function version the invokes reach, as GetFunctionConfiguration describes it."""

    function_name: str
    qualifier: str | None
    version: str
    snap_start: bool
    memory_mb: int
    log_group: str
    last_modified: str | None
    environment: dict[str, str]
    revision_id: str | None

    @property
    def label(self) -> str:
        return f"{self.function_name}:{self.qualifier}" if self.qualifier else self.function_name


@dataclass(frozen=True)
class Measurement:
    """One invoke: what the client timed and what Lambda reported."""

    index: int
    request_id: str | None
    first_byte_ms: float | None
    total_ms: float | None
    status_code: int | None = None
    function_error: str | None = None
    error: str | None = None
    """The answer's errorType/errorMessage, or the API error that stopped the invoke."""
    report: ReportRecord | None = None
    inits: tuple[InitReport, ...] = ()
    record_source: str = "none"
    """Where the REPORT record came from: ``log tail``, ``CloudWatch Logs`` or ``none``."""

    @property
    def kind(self) -> str:
        """``cold``, ``restored``, ``warm``, ``failed`` or ``unknown`` (no REPORT record found)."""
        if self.error is not None or self.function_error is not None:
            return "failed"
        if self.report is None:
            return "unknown"
        if self.report.status not in (None, "success"):
            return "failed"
        if self.report.restored:
            return "restored"
        if self.report.cold:
            return "cold"
        return "warm"

    @property
    def new_environment(self) -> bool:
        return self.kind in ("cold", "restored")

    def failure(self) -> str:
        """Why the invoke counts as failed."""
        if self.error is not None:
            return self.error
        if self.function_error is not None:
            return f"function error {self.function_error}"
        r = self.report
        if r is None:
            return "no REPORT record"
        return f"REPORT status {r.status}" + (f" ({r.error_type})" if r.error_type else "")

    def as_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "index": self.index,
            "request_id": self.request_id,
            "environment": self.kind,
            "init_ms": _num(r.init_ms if r else None),
            "restore_ms": _num(r.restore_ms if r else None),
            "billed_restore_ms": r.billed_restore_ms if r else None,
            "duration_ms": _num(r.duration_ms if r else None),
            "billed_ms": r.billed_ms if r else None,
            "max_memory_used_mb": r.max_memory_used_mb if r else None,
            "first_byte_ms": self.first_byte_ms,
            "total_ms": self.total_ms,
            "status_code": self.status_code,
            "function_error": self.function_error,
            "error": self.error,
            "record_source": self.record_source,
        }


@dataclass
class ColdStartReport:
    target: Target
    method: str
    measurements: list[Measurement]
    snapshot_init: InitReport | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def new_environments(self) -> list[Measurement]:
        return [m for m in self.measurements if m.new_environment]

    def medians(self) -> dict[str, float | None]:
        """Medians over the new environments (cold or restored); warm and failed invokes left out."""
        fresh = self.new_environments

        def median(values: Sequence[float | Decimal | None]) -> float | None:
            present = [float(v) for v in values if v is not None]
            return statistics.median(present) if present else None

        reports = [m.report for m in fresh if m.report is not None]
        return {
            "init_ms": median([r.init_ms for r in reports]),
            "restore_ms": median([r.restore_ms for r in reports]),
            "billed_restore_ms": median([r.billed_restore_ms for r in reports]),
            "duration_ms": median([r.duration_ms for r in reports]),
            "cold_start_ms": median(
                [(r.init_ms or r.restore_ms or Decimal(0)) + r.duration_ms for r in reports]
            ),
            "first_byte_ms": median([m.first_byte_ms for m in fresh]),
            "total_ms": median([m.total_ms for m in fresh]),
        }

    @property
    def ok(self) -> bool:
        """At least one new environment measured, and no invoke failed."""
        return bool(self.new_environments) and not any(m.kind == "failed" for m in self.measurements)

    def text(self) -> str:
        t = self.target
        snap = "SnapStart on" if t.snap_start else "no SnapStart"
        intro = [
            f"Cold starts of {t.label} (version {t.version}, {snap}, {t.memory_mb:,} MB), "
            f"{len(self.measurements)} invoke(s)",
            f"forced by: {describe_method(self.method, len(self.measurements))}",
            "figures: Lambda's REPORT and INIT_REPORT records for these invocations, from your account "
            "(invoke log tails, CloudWatch Logs); first byte and whole answer timed by this client",
        ]
        lines = [textwrap.fill(line, width=100, subsequent_indent="  ") for line in intro]
        lines += [
            "",
            f"{'#':>3}  {'environment':<11} {'init ms':>9} {'restore ms':>10} {'billed restore':>14} "
            f"{'duration ms':>11} {'billed ms':>9} {'first byte ms':>13} {'answer ms':>9}  record",
        ]
        for m in self.measurements:
            r = m.report
            init_ms, restore_ms = (r.init_ms, r.restore_ms) if r else (None, None)
            billed_restore, duration, billed = (
                (r.billed_restore_ms, r.duration_ms, r.billed_ms) if r else (None, None, None)
            )
            lines.append(
                f"{m.index:>3}  {m.kind:<11} {_cell(init_ms):>9} {_cell(restore_ms):>10} "
                f"{_cell(billed_restore, 0):>14} {_cell(duration):>11} {_cell(billed, 0):>9} "
                f"{_cell(m.first_byte_ms, 0):>13} {_cell(m.total_ms, 0):>9}  {m.record_source}"
            )
        lines.append("")
        if self.snapshot_init is not None:
            init = self.snapshot_init
            lines.append(
                f"Snapshot init (INIT_REPORT written when version {t.version} was published): "
                f"{_cell(init.duration_ms)} ms, {init.status or 'status not given'}"
            )
        fresh = self.new_environments
        medians = self.medians()
        if fresh:
            parts = [
                f"{label} {_cell(medians[key], 0 if key.endswith('byte_ms') or key == 'total_ms' else 1)} ms"
                for key, label in (
                    ("init_ms", "Init Duration"),
                    ("restore_ms", "Restore Duration"),
                    ("duration_ms", "Duration"),
                    ("cold_start_ms", "cold start (Init or Restore Duration + Duration)"),
                    ("first_byte_ms", "first byte"),
                    ("total_ms", "whole answer"),
                )
                if medians[key] is not None
            ]
            lines.append(
                textwrap.fill(
                    f"Medians over {len(fresh)} new environment(s): " + ", ".join(parts),
                    width=100,
                    subsequent_indent="  ",
                )
            )
        else:
            lines.append("No new environment was measured: no median.")
        warm = [m for m in self.measurements if m.kind == "warm"]
        if warm:
            lines.append(f"{len(warm)} invoke(s) reached a warm environment (not counted as cold starts).")
        for m in self.measurements:
            if m.kind == "failed":
                lines.append(f"invoke {m.index} failed: {m.failure()}")
            elif m.kind == "unknown":
                lines.append(f"invoke {m.index}: no REPORT record found (request id {m.request_id}).")
        lines.extend(self.notes)
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        t = self.target
        return {
            "function": t.function_name,
            "qualifier": t.qualifier,
            "version": t.version,
            "snap_start": t.snap_start,
            "memory_mb": t.memory_mb,
            "method": self.method,
            "invokes": [m.as_json() for m in self.measurements],
            "snapshot_init_ms": None if self.snapshot_init is None else _num(self.snapshot_init.duration_ms),
            "new_environments": len(self.new_environments),
            "medians": self.medians(),
            "notes": self.notes,
        }


def _num(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def _cell(value: float | int | Decimal | None, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value):,.{digits}f}"


def describe_method(method: str, n: int) -> str:
    if method == "update-config":
        return (
            f"changing the environment variable {PROBE_VARIABLE} of $LATEST before each of the {n} invoke(s) "
            "(UpdateFunctionConfiguration; the environment is put back afterwards)"
        )
    return (
        f"{n} invoke(s) sent at once: concurrent requests each need their own environment; "
        "any already warm answers one of them and is reported as warm"
    )


# ---------------------------------------------------------------------------
# Steps


def describe_target(lam: Any, function_name: str, qualifier: str | None) -> Target:
    """What the invokes will reach: version, SnapStart, memory, log group, environment."""
    query: dict[str, Any] = {"FunctionName": function_name}
    if qualifier:
        query["Qualifier"] = qualifier
    try:
        config = lam.get_function_configuration(**query)
    except (BotoCoreError, ClientError) as exc:
        raise ColdStartError(f"cannot read the configuration of {function_name}: {exc}") from None
    snap = (config.get("SnapStart") or {}).get("OptimizationStatus") == "On"
    return Target(
        function_name=function_name,
        qualifier=qualifier,
        version=str(config.get("Version", LATEST)),
        snap_start=snap,
        memory_mb=int(config.get("MemorySize", 0)),
        log_group=lambda_logs.log_group_of(config, function_name),
        last_modified=config.get("LastModified"),
        environment=dict((config.get("Environment") or {}).get("Variables") or {}),
        revision_id=config.get("RevisionId"),
    )


def choose_method(target: Target, requested: str) -> str:
    """``update-config`` for $LATEST, ``concurrent`` for a version or alias, or the method asked for."""
    if requested not in METHODS:
        raise ColdStartError(f"unknown method {requested!r}: use {', '.join(METHODS)}")
    on_latest = target.version == LATEST
    if requested == "auto":
        return "update-config" if on_latest else "concurrent"
    if requested == "update-config" and not on_latest:
        raise ColdStartError(
            f"--method update-config works on $LATEST only: {target.label} is version {target.version}, "
            "whose configuration cannot change (use --method concurrent, or no --qualifier)"
        )
    return requested


def invoke_once(
    lam: Any, target: Target, payload: bytes, index: int, clock: Clock
) -> tuple[Measurement, str]:
    """One invoke with its log tail: the measurement so far and the decoded tail."""
    query: dict[str, Any] = {"FunctionName": target.function_name, "Payload": payload, "LogType": "Tail"}
    if target.qualifier:
        query["Qualifier"] = target.qualifier
    started = clock()
    try:
        response = lam.invoke(**query)
        first_byte = clock()
        body = response["Payload"].read()
        done = clock()
    except (BotoCoreError, ClientError) as exc:
        return Measurement(
            index=index, request_id=None, first_byte_ms=None, total_ms=None, error=str(exc)
        ), ""
    tail = base64.b64decode(response.get("LogResult") or "").decode("utf-8", "replace")
    function_error = response.get("FunctionError")
    return (
        Measurement(
            index=index,
            request_id=(response.get("ResponseMetadata") or {}).get("RequestId"),
            first_byte_ms=(first_byte - started) * 1000,
            total_ms=(done - started) * 1000,
            status_code=int(response.get("StatusCode", 0)),
            function_error=function_error,
            error=_error_text(body) if function_error else None,
        ),
        tail,
    )


def _error_text(body: bytes) -> str:
    """``errorType: errorMessage`` of a function error's answer, else its first 200 characters."""
    try:
        answer = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace")
    if isinstance(answer, dict) and ("errorType" in answer or "errorMessage" in answer):
        return f"{answer.get('errorType', 'Error')}: {str(answer.get('errorMessage', ''))[:200]}"
    return json.dumps(answer)[:200]


def read_records(tail: str) -> LogRecords:
    try:
        return lambda_logs.parse_log(tail.splitlines())
    except CostInputError:
        return LogRecords()


def find_in_cloudwatch(
    logs: Any, target: Target, request_id: str, start_ms: int, sleep: Sleep
) -> tuple[ReportRecord | None, tuple[InitReport, ...]]:
    """The invocation's REPORT (and INIT_REPORT) records in the log group, waiting for them to arrive."""
    for attempt in range(LOG_LOOKUP_ATTEMPTS):
        if attempt:
            sleep(LOG_LOOKUP_WAIT_S)
        try:
            found = lambda_logs.parse_log(
                lambda_logs.messages(
                    logs, logGroupName=target.log_group, filterPattern=f'"{request_id}"', startTime=start_ms
                )
            )
        except (BotoCoreError, ClientError, CostInputError):
            return None, ()
        report = found.report_for(request_id)
        if report is not None:
            return report, found.inits
    return None, ()


def snapshot_init(logs: Any, target: Target) -> InitReport | None:
    """The INIT_REPORT Lambda wrote when the SnapStart version was published, from its log streams."""
    since = _epoch_ms(target.last_modified)
    query: dict[str, Any] = {
        "logGroupName": target.log_group,
        "filterPattern": lambda_logs.INIT_REPORT_FILTER_PATTERN,
    }
    if since is not None:
        query["startTime"] = since - 5 * 60 * 1000
    marker = f"[{target.version}]"
    found: InitReport | None = None
    try:
        for stream, message in lambda_logs.events(logs, **query):
            if marker not in stream:
                continue
            record = lambda_logs.parse_record(message)
            if isinstance(record, InitReport):
                found = record
    except (BotoCoreError, ClientError, CostInputError):
        return None
    return found


def _epoch_ms(last_modified: str | None) -> int | None:
    """GetFunctionConfiguration's LastModified (``2026-11-30T09:49:55.000+0000``) in epoch milliseconds."""
    if not last_modified:
        return None
    try:
        moment = datetime.strptime(last_modified, "%Y-%m-%dT%H:%M:%S.%f%z")
    except ValueError:
        return None
    return int(moment.timestamp() * 1000)


def wait_until_updated(lam: Any, function_name: str, sleep: Sleep, clock: Clock) -> dict[str, Any]:
    """Poll GetFunctionConfiguration until the last update is Successful; its configuration then."""
    deadline = clock() + UPDATE_TIMEOUT_S
    while True:
        config: dict[str, Any] = lam.get_function_configuration(FunctionName=function_name)
        status = config.get("LastUpdateStatus")
        if status in (None, "Successful"):
            return config
        if status == "Failed":
            raise ColdStartError(
                f"updating {function_name} failed: {config.get('LastUpdateStatusReason', 'no reason given')}"
            )
        if clock() > deadline:
            raise ColdStartError(f"{function_name} was still updating after {UPDATE_TIMEOUT_S:.0f} s")
        sleep(1.0)


def set_environment(
    lam: Any,
    function_name: str,
    variables: dict[str, str],
    revision_id: str | None,
    sleep: Sleep,
    clock: Clock,
) -> str | None:
    """Replace $LATEST's environment variables and wait for it; the new revision id."""
    update: dict[str, Any] = {"FunctionName": function_name, "Environment": {"Variables": variables}}
    if revision_id:
        update["RevisionId"] = revision_id
    try:
        lam.update_function_configuration(**update)
        config = wait_until_updated(lam, function_name, sleep, clock)
    except (BotoCoreError, ClientError) as exc:
        raise ColdStartError(f"cannot update the configuration of {function_name}: {exc}") from None
    revision = config.get("RevisionId")
    return str(revision) if revision else None


# ---------------------------------------------------------------------------
# The whole measurement


def measure(
    lam: Any,
    logs: Any | None,
    target: Target,
    *,
    method: str,
    n: int,
    payload: bytes,
    clock: Clock = time.perf_counter,
    wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    sleep: Sleep = time.sleep,
    nonce: Callable[[], str] = lambda: uuid.uuid4().hex[:12],
) -> ColdStartReport:
    """Force ``n`` new environments of ``target`` the ``method`` way and measure each invoke."""
    if not 1 <= n <= MAX_INVOKES:
        raise ColdStartError(f"-n must be between 1 and {MAX_INVOKES}, got {n}")
    started_ms = wall_ms() - 60_000
    pairs: list[tuple[Measurement, str]] = []
    notes: list[str] = []
    if method == "update-config":
        run_id = nonce()
        revision = target.revision_id
        try:
            for i in range(1, n + 1):
                variables = {**target.environment, PROBE_VARIABLE: f"{run_id}-{i}"}
                revision = set_environment(lam, target.function_name, variables, revision, sleep, clock)
                pairs.append(invoke_once(lam, target, payload, i, clock))
        finally:
            try:
                set_environment(lam, target.function_name, dict(target.environment), revision, sleep, clock)
            except ColdStartError as exc:
                notes.append(
                    f"WARNING: could not put the environment of {target.function_name} back: {exc}; "
                    f"remove {PROBE_VARIABLE} by hand (or redeploy)"
                )
        notes.append(
            f"The environment of {target.function_name} is back as it was ({PROBE_VARIABLE} removed)."
        )
    else:
        barrier = threading.Barrier(n)

        def task(i: int) -> tuple[Measurement, str]:
            with contextlib.suppress(threading.BrokenBarrierError):  # start together, or as soon as possible
                barrier.wait(timeout=60)
            return invoke_once(lam, target, payload, i, clock)

        with ThreadPoolExecutor(max_workers=n) as pool:
            pairs = list(pool.map(task, range(1, n + 1)))
    measurements = [_complete(m, tail, logs, target, started_ms, sleep) for m, tail in pairs]
    init = snapshot_init(logs, target) if (logs is not None and target.snap_start) else None
    if target.snap_start and logs is not None and init is None:
        notes.append(
            f"No INIT_REPORT found for version {target.version} in {target.log_group} "
            "(Lambda writes it when the version is published; logs:FilterLogEvents is needed)."
        )
    return ColdStartReport(
        target=target, method=method, measurements=measurements, snapshot_init=init, notes=notes
    )


def _complete(
    m: Measurement, tail: str, logs: Any | None, target: Target, start_ms: int, sleep: Sleep
) -> Measurement:
    """Attach the REPORT record: from the log tail, else from CloudWatch Logs by request id."""
    found = read_records(tail)
    report = found.report_for(m.request_id) if m.request_id else None
    if report is None and len(found.reports) == 1:
        report = found.reports[0]
    if report is not None:
        return _with(m, report, found.inits, "log tail")
    if logs is not None and m.request_id:
        report, inits = find_in_cloudwatch(logs, target, m.request_id, start_ms, sleep)
        if report is not None:
            return _with(m, report, found.inits + inits, "CloudWatch Logs")
    return m


def _with(m: Measurement, report: ReportRecord, inits: tuple[InitReport, ...], source: str) -> Measurement:
    return Measurement(
        index=m.index,
        request_id=m.request_id or report.request_id,
        first_byte_ms=m.first_byte_ms,
        total_ms=m.total_ms,
        status_code=m.status_code,
        function_error=m.function_error,
        error=m.error,
        report=report,
        inits=inits,
        record_source=source,
    )

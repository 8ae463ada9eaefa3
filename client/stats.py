"""What a deployed stack did over the last hours: tokens, cost, time to first token, cold starts, refusals.

Figures come from the account itself:

* the handlers' metrics (``lambda_common.metrics``, CloudWatch namespace from each
  function's ``POWERTOOLS_METRICS_NAMESPACE``) and Lambda's own (``AWS/Lambda``),
  read with ``GetMetricData`` (one query per figure, the whole window as one period;
  the refusal codes found with ``ListMetrics``);
* each function's REPORT records (``benchmarks.lambda_logs``), priced by the cost
  model (``benchmarks.cost_model``, prices from ``benchmarks/prices.json``).

Two costs are shown because they differ: REPORT records carry the billed duration
(init included for image functions, rounded up per invocation), while the Duration
metric excludes the init phase; the first is the bill, the second a cross-check
that needs no log read.

Permissions: cloudformation:DescribeStacks, lambda:GetFunctionConfiguration,
cloudwatch:GetMetricData, cloudwatch:ListMetrics, logs:FilterLogEvents
(not with ``--no-logs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchmarks import lambda_logs
from benchmarks.cost_model import LogCost, price, usd
from benchmarks.prices import MB_PER_GB, MILLION, MS_PER_S, CostInputError, PriceBook

LAMBDA = "AWS/Lambda"
OUTPUTS = {"llama": "LlamaFunctionName", "embeddings": "EmbeddingsFunctionName"}
"""The stack outputs naming each function."""
METRICS_NAMESPACE_VARIABLE = "POWERTOOLS_METRICS_NAMESPACE"
SERVICE_VARIABLE = "POWERTOOLS_SERVICE_NAME"
MAX_HOURS = 24 * 14
"""The handlers' per-minute data is kept 15 days; REPORT records as long as the log retention."""

_LAMBDA_FIGURES = (
    ("invocations", "Invocations", "Sum"),
    ("errors", "Errors", "Sum"),
    ("throttles", "Throttles", "Sum"),
    ("duration", "Duration", "Sum"),
)
_COMMON_FIGURES = (
    ("cold", "ColdStart", "Sum"),
    ("measured", "ColdStart", "SampleCount"),
    ("restored", "Restore", "Sum"),
    ("server_errors", "ServerErrors", "Sum"),
)
_GENERATOR_FIGURES = (
    ("tokens_in", "PromptTokens", "Sum"),
    ("tokens_out", "CompletionTokens", "Sum"),
    ("ttft_p50", "TimeToFirstToken", "p50"),
    ("ttft_p95", "TimeToFirstToken", "p95"),
    ("tokens_per_s", "TokensPerSecond", "Average"),
    ("deadline_stops", "DeadlineStops", "Sum"),
)
_EMBEDDINGS_FIGURES = (
    ("inputs", "Inputs", "Sum"),
    ("tokens_in", "InputTokens", "Sum"),
    ("latency_p50", "BatchLatency", "p50"),
    ("latency_p95", "BatchLatency", "p95"),
)


class StatsError(RuntimeError):
    """The stack or its functions cannot be read; the message says what and why."""


@dataclass(frozen=True)
class Function:
    """One function of the stack, as its configuration describes it."""

    key: str
    name: str
    memory_mb: int
    shape: lambda_logs.FunctionShape
    namespace: str
    service: str
    log_group: str


@dataclass
class FunctionStats:
    function: Function
    figures: dict[str, float] = field(default_factory=dict)
    refusals: dict[str, float] = field(default_factory=dict)
    logs: LogCost | None = None
    log_note: str = ""
    metrics_cost: Decimal = Decimal(0)

    def figure(self, name: str) -> float:
        return self.figures.get(name, 0.0)

    @property
    def tokens(self) -> float:
        return self.figure("tokens_in") + self.figure("tokens_out")

    @property
    def cost(self) -> Decimal:
        """The bill: from REPORT records when read, else from the metrics."""
        return self.logs.total if self.logs is not None else self.metrics_cost


@dataclass
class Window:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> int:
        return int((self.end - self.start).total_seconds())

    @property
    def hours(self) -> float:
        return self.seconds / 3600

    def describe(self) -> str:
        span = f"{self.hours:g} hour" + ("s" if self.hours != 1 else "")
        if self.hours % 24 == 0:
            days = int(self.hours // 24)
            span = f"{days} day" + ("s" if days != 1 else "")
        return f"last {span} ({self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC)"


def window(hours: float, now: datetime | None = None) -> Window:
    if not 0 < hours <= MAX_HOURS:
        raise StatsError(f"the window must be more than 0 and at most {MAX_HOURS} hours, got {hours:g}")
    end = (now or datetime.now(UTC)).replace(second=0, microsecond=0)
    seconds = max(60, round(hours * 3600 / 60) * 60)  # GetMetricData periods are whole minutes
    return Window(end - timedelta(seconds=seconds), end)


# ---------------------------------------------------------------------- reading the account


def stack_functions(cloudformation: Any, lam: Any, stack_name: str) -> list[Function]:
    """The stack's functions (from its outputs) and their configuration."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except Exception as exc:  # botocore's ClientError and its relatives
        raise StatsError(f"cannot read stack {stack_name!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [output for output in OUTPUTS.values() if output not in outputs]
    if missing:
        raise StatsError(
            f"stack {stack_name!r} has no output {', '.join(missing)}: is it this project's stack?"
        )
    found = []
    for key, output in OUTPUTS.items():
        name = outputs[output]
        config = lam.get_function_configuration(FunctionName=name)
        variables = (config.get("Environment") or {}).get("Variables") or {}
        found.append(
            Function(
                key=key,
                name=name,
                memory_mb=int(config["MemorySize"]),
                shape=lambda_logs.shape_of(config),
                namespace=variables.get(METRICS_NAMESPACE_VARIABLE, stack_name),
                service=variables.get(SERVICE_VARIABLE, key),
                log_group=lambda_logs.log_group_of(config, name),
            )
        )
    return found


def _query(
    query_id: str, namespace: str, metric: str, dimensions: Mapping[str, str], stat: str, period: int
) -> dict[str, Any]:
    return {
        "Id": query_id,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": [{"Name": k, "Value": v} for k, v in dimensions.items()],
            },
            "Period": period,
            "Stat": stat,
        },
        "ReturnData": True,
    }


def refusal_codes(cloudwatch: Any, function: Function) -> list[str]:
    """The error codes the function's Refusals metric has been written with."""
    codes: set[str] = set()
    for page in cloudwatch.get_paginator("list_metrics").paginate(
        Namespace=function.namespace,
        MetricName="Refusals",
        Dimensions=[{"Name": "service", "Value": function.service}],
    ):
        for metric in page.get("Metrics", []):
            for dimension in metric.get("Dimensions", []):
                if dimension["Name"] == "error_code":
                    codes.add(dimension["Value"])
    return sorted(codes)


def _queries(function: Function, codes: Iterable[str], period: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Query id -> (figure name, query) for every figure of ``function``."""
    prefix = function.key[:1]
    queries: dict[str, tuple[str, dict[str, Any]]] = {}
    lambda_dims = {"FunctionName": function.name}
    for figure, metric, stat in _LAMBDA_FIGURES:
        queries[f"{prefix}_{figure}"] = (
            figure,
            _query(f"{prefix}_{figure}", LAMBDA, metric, lambda_dims, stat, period),
        )
    own = _GENERATOR_FIGURES if function.key == "llama" else _EMBEDDINGS_FIGURES
    dims = {"service": function.service}
    for figure, metric, stat in (*_COMMON_FIGURES, *own):
        queries[f"{prefix}_{figure}"] = (
            figure,
            _query(f"{prefix}_{figure}", function.namespace, metric, dims, stat, period),
        )
    for index, code in enumerate(codes):
        query_id = f"{prefix}_refusal_{index}"
        refused = {"service": function.service, "error_code": code}
        queries[query_id] = (
            f"refusal:{code}",
            _query(query_id, function.namespace, "Refusals", refused, "Sum", period),
        )
    return queries


def metric_data(
    cloudwatch: Any, queries: list[dict[str, Any]], span: Window
) -> dict[str, list[tuple[datetime, float]]]:
    """Query id -> [(timestamp, value)], oldest first, over every page."""
    series: dict[str, list[tuple[datetime, float]]] = {}
    for start in range(0, len(queries), 500):  # GetMetricData's limit per call
        token = None
        while True:
            request: dict[str, Any] = {
                "MetricDataQueries": queries[start : start + 500],
                "StartTime": span.start,
                "EndTime": span.end,
                "ScanBy": "TimestampAscending",
            }
            if token:
                request["NextToken"] = token
            answer = cloudwatch.get_metric_data(**request)
            for result in answer["MetricDataResults"]:
                series.setdefault(result["Id"], []).extend(
                    zip(result.get("Timestamps", []), result.get("Values", []), strict=True)
                )
            token = answer.get("NextToken")
            if not token:
                break
    return series


def _total(values: list[tuple[datetime, float]], stat: str) -> float | None:
    if not values:
        return None
    if stat in ("Sum", "SampleCount"):
        return sum(value for _, value in values)
    return values[-1][1]  # one period spans the window; an unaligned start may add a partial first one


def collect(
    *,
    cloudformation: Any,
    lam: Any,
    cloudwatch: Any,
    logs: Any | None,
    stack_name: str,
    span: Window,
    prices: PriceBook,
) -> list[FunctionStats]:
    """Every figure of every function of the stack over ``span``."""
    functions = stack_functions(cloudformation, lam, stack_name)
    everything: dict[str, tuple[FunctionStats, str, dict[str, Any]]] = {}
    stats = []
    for function in functions:
        current = FunctionStats(function)
        stats.append(current)
        for query_id, (figure, query) in _queries(
            function, refusal_codes(cloudwatch, function), span.seconds
        ).items():
            everything[query_id] = (current, figure, query)
    series = metric_data(cloudwatch, [query for _, _, query in everything.values()], span)
    for query_id, (current, figure, query) in everything.items():
        value = _total(series.get(query_id, []), query["MetricStat"]["Stat"])
        if value is None:
            continue
        if figure.startswith("refusal:"):
            current.refusals[figure.split(":", 1)[1]] = value
        else:
            current.figures[figure] = value
    for current in stats:
        function = current.function
        rate = prices.rate(function.shape.region, function.shape.architecture)
        gb = Decimal(function.memory_mb) / MB_PER_GB
        seconds = Decimal(str(current.figure("duration"))) / MS_PER_S
        current.metrics_cost = (
            gb * seconds * rate.gb_second + Decimal(str(current.figure("invocations"))) * rate.request
        )
        if logs is None:
            current.log_note = "REPORT records not read (--no-logs)"
            continue
        records = lambda_logs.report_records(logs, function.log_group, span.start, span.end)
        if records:
            current.logs = price(records, function.shape, prices)
        else:
            current.log_note = f"no REPORT records in {function.log_group}"
    return stats


# ---------------------------------------------------------------------- the report


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def report(stack_name: str, span: Window, stats: list[FunctionStats]) -> str:
    region = stats[0].function.shape.region if stats else "?"
    namespaces = sorted({s.function.namespace for s in stats})
    lines = [f"{stack_name} in {region}, {span.describe()}; metrics namespace {', '.join(namespaces)}"]
    for current in stats:
        f = current.function
        get = current.figures.get
        invocations = current.figure("invocations")
        lines += ["", f"{f.key} ({f.name}), {f.memory_mb:,} MB {f.shape.architecture}"]
        lines.append(
            f"  invocations     {_count(invocations)} ({_count(current.figure('errors'))} errors, "
            f"{_count(current.figure('throttles'))} throttled)"
        )
        if f.key == "llama":
            tokens_in, tokens_out = _count(current.figure("tokens_in")), _count(current.figure("tokens_out"))
            lines.append(f"  tokens          in {tokens_in}, out {tokens_out}")
            lines.append(f"  time to first   p50 {_ms(get('ttft_p50'))}, p95 {_ms(get('ttft_p95'))}")
            speed = get("tokens_per_s")
            lines.append(f"  generation      {'-' if speed is None else f'{speed:,.1f}'} tokens/s (average)")
            lines.append(f"  deadline stops  {_count(current.figure('deadline_stops'))}")
        else:
            inputs, tokens_in = _count(current.figure("inputs")), _count(current.figure("tokens_in"))
            lines.append(f"  inputs          {inputs} ({tokens_in} tokens)")
            lines.append(f"  batch latency   p50 {_ms(get('latency_p50'))}, p95 {_ms(get('latency_p95'))}")
        measured = current.figure("measured")
        cold = current.figure("cold")
        share = f" ({cold / measured:.1%})" if measured else ""
        restored = current.figure("restored")
        lines.append(
            f"  cold starts     {_count(cold)} of {_count(measured)} measured invocations{share}"
            + (f", {_count(restored)} SnapStart restores" if restored else "")
        )
        refused = ", ".join(f"{code} {_count(n)}" for code, n in sorted(current.refusals.items())) or "none"
        lines.append(f"  refusals        {refused} ({_count(current.figure('server_errors'))} answered 5xx)")
        if current.logs is not None:
            billed = current.logs
            lines.append(
                f"  cost            {usd(billed.total)} from {len(billed.records):,} REPORT records "
                f"({len(billed.cold_starts):,} cold); {usd(current.metrics_cost)} from the "
                "Duration and Invocations metrics (init not included)"
            )
        else:
            lines.append(
                f"  cost            {usd(current.metrics_cost)} from the Duration and Invocations metrics "
                f"({current.log_note})"
            )
        if current.tokens:
            per_million = current.cost / Decimal(str(current.tokens)) * MILLION
            lines.append(f"  per token       {usd(per_million)} per million tokens")
    total = sum((current.cost for current in stats), Decimal(0))
    tokens = sum(current.tokens for current in stats)
    lines += ["", f"total           {usd(total)} for {_count(tokens)} tokens"]
    return "\n".join(lines)


def as_json(stack_name: str, span: Window, stats: list[FunctionStats]) -> dict[str, Any]:
    return {
        "stack": stack_name,
        "start": span.start.isoformat(),
        "end": span.end.isoformat(),
        "functions": {
            current.function.key: {
                "name": current.function.name,
                "namespace": current.function.namespace,
                "figures": current.figures,
                "refusals": current.refusals,
                "cost_usd": str(current.cost),
                "cost_from_reports_usd": None if current.logs is None else str(current.logs.total),
                "cost_from_metrics_usd": str(current.metrics_cost),
                "report_records": 0 if current.logs is None else len(current.logs.records),
            }
            for current in stats
        },
    }


# ---------------------------------------------------------------------- the chart


def chart(cloudwatch: Any, stats: list[FunctionStats], span: Window, path: Path) -> None:
    """A PNG of tokens in and out and time to first token over the window (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise StatsError("--png needs matplotlib: pip install matplotlib") from None
    period = 300 if span.hours <= 6 else 3600
    wanted = []
    for current in stats:
        f = current.function
        dims = {"service": f.service}
        for figure, metric, stat in (
            ("tokens_in", "PromptTokens" if f.key == "llama" else "InputTokens", "Sum"),
            ("tokens_out", "CompletionTokens", "Sum"),
            ("ttft_p50", "TimeToFirstToken", "p50"),
        ):
            if f.key == "embeddings" and figure != "tokens_in":
                continue
            wanted.append(
                (
                    f"{f.key[:1]}_{figure}",
                    f"{f.key} {figure.replace('_', ' ')}",
                    _query(f"{f.key[:1]}_{figure}", f.namespace, metric, dims, stat, period),
                )
            )
    series = metric_data(cloudwatch, [query for _, _, query in wanted], span)
    drawing, (tokens_axis, ttft_axis) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for query_id, label, _ in wanted:
        points = series.get(query_id, [])
        axis = ttft_axis if query_id.endswith("ttft_p50") else tokens_axis
        axis.plot([t for t, _ in points], [v for _, v in points], marker=".", label=label)
    tokens_axis.set_ylabel(f"tokens per {period // 60} min")
    ttft_axis.set_ylabel("time to first token, p50 (ms)")
    tokens_axis.legend()
    ttft_axis.legend()
    tokens_axis.set_title(f"{span.describe()}")
    drawing.tight_layout()
    drawing.savefig(path, format="png")
    plt.close(drawing)


__all__ = ["CostInputError", "StatsError", "chart", "collect", "report", "window"]

"""``python -m benchmarks.cost`` (``make cost``): what the functions cost, from their shape or their logs.

The price data is ``benchmarks/prices.json`` (loaded by ``benchmarks.prices``),
the model is ``benchmarks.cost_model``; this module is the command line.

Usage::

    python -m benchmarks.cost                       # both functions as cdk.json configures them:
                                                    # per-request cost and SnapStart's idle monthly cost
    python -m benchmarks.cost functions --region ap-northeast-1 --duration-ms 2500
    python -m benchmarks.cost snapstart --memory-mb 4096 --restores 1000
    python -m benchmarks.cost --memory-mb 8000 --duration-ms 6000 --requests 100000 \\
        --region eu-central-1
    python -m benchmarks.cost --memory-mb 3008 --requests 100000 \\
        --prompt-tokens 400 --prompt-tokens-per-s 250 --output-tokens 200 --output-tokens-per-s 20
    python -m benchmarks.cost logs --file report-lines.log --region eu-central-1
    python -m benchmarks.cost logs --function my-function --since-hours 24
    python -m benchmarks.cost prices
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import lambda_logs
from benchmarks.cost_model import (
    CENT,
    Estimate,
    SnapStartCost,
    Tokens,
    Workload,
    duration_from_throughput,
    estimate,
    plain,
    price,
    snapstart_cost,
    usd,
    usd_rate,
)
from benchmarks.prices import (
    ARCHITECTURES,
    DEFAULT_REGION,
    MILLION,
    MS_PER_S,
    PRICES_PATH,
    CostInputError,
    PriceBook,
    load_prices,
    normalise_architecture,
)

if TYPE_CHECKING:
    from stacks.config import AppConfig, FunctionConfig

ROOT = Path(__file__).resolve().parent.parent
CDK_JSON = ROOT / "cdk.json"

# ---------------------------------------------------------------------------
# Text for an estimate


def breakdown(result: Estimate) -> str:
    """The seed's breakdown: each line shows its arithmetic."""
    w = result.workload
    r = result.rate
    seconds = Decimal(result.billed_ms_per_request) / MS_PER_S
    lines = [
        f"{w.requests:,} requests x {result.billed_ms_per_request:,} ms billed at {w.memory_mb:,} MB, "
        f"{w.ephemeral_mb:,} MB ephemeral storage, {r.architecture} in {r.region}",
        f"  GB-seconds  {w.memory_mb:,}/1024 GB x {plain(seconds)} s x {w.requests:,} = "
        f"{plain(result.gb_seconds)} GB-s",
        f"  compute     {plain(result.gb_seconds)} GB-s x ${plain(result.compute_per_gb_second)}"
        f"/GB-s = {usd(result.compute)}",
        f"  requests    {w.requests:,} x {usd(r.request * MILLION)}/M = {usd(result.request_cost)}",
    ]
    if result.ephemeral_gb_seconds:
        lines.append(
            f"  ephemeral   ({w.ephemeral_mb:,}-{result.ephemeral_included_mb})/1024 GB x {plain(seconds)} s "
            f"x {w.requests:,} = {plain(result.ephemeral_gb_seconds)} GB-s x ${plain(r.ephemeral_gb_second)} "
            f"= {usd(result.ephemeral)}"
        )
    else:
        lines.append(f"  ephemeral   {result.ephemeral_included_mb} MB is included = $0.00")
    lines.append(
        f"  total       {usd(result.total)}  ({usd(result.per_request)} per request, "
        f"{usd(result.per_request * MILLION)} per million requests)"
    )
    return "\n".join(lines)


def report(result: Estimate, book: PriceBook) -> str:
    """Breakdown, per-token figures, free tier and managed alternatives, as text."""
    w = result.workload
    out = [breakdown(result), ""]
    blended = result.per_million_tokens()
    if blended is not None:
        out.append(
            f"Per million tokens ({w.tokens.input:,} in + {w.tokens.output:,} out per request): "
            f"{usd_rate(blended)}"
        )
        inp, outp = result.per_million_by_kind()
        if inp is not None and w.tokens.input_per_s is not None:
            out.append(
                f"  input (prompt processing at {plain(w.tokens.input_per_s)} tokens/s): {usd_rate(inp)}"
            )
        if outp is not None and w.tokens.output_per_s is not None:
            out.append(f"  output (generation at {plain(w.tokens.output_per_s)} tokens/s): {usd_rate(outp)}")
        if inp is not None or outp is not None:
            out.append("  (compute only, from the speeds; request fees are in the blended figure)")
    free = result.free_requests_per_month()
    line = (
        f"Monthly free tier ({book.free_tier.requests:,} requests, {plain(book.free_tier.gb_seconds)} GB-s, "
        f"shared by every function in the account): {free:,} requests of this shape"
    )
    if w.tokens.total:
        line += f", {result.free_tokens_per_month():,} tokens"
    out.append(line)
    out.append(f"  bill if this were the account's only Lambda use: {usd(result.total_after_free_tier())}")
    if result.ephemeral:
        out.append(f"  (ephemeral storage above {result.ephemeral_included_mb} MB is never free)")
    if result.managed:
        out.append("")
        out.append("Managed alternatives for the same tokens (a different model, so not the same quality):")
        for comp in result.managed:
            rates = f"${plain(comp.offer.input_per_million)}/M in"
            if comp.offer.kind == "generation":
                rates += f", ${plain(comp.offer.output_per_million)}/M out"
            ratio = f"{float(result.total / comp.cost):.2g}x" if comp.cost else "n/a"
            out.append(f"  {comp.offer.name} ({rates}): {usd(comp.cost)}; Lambda costs {ratio} that")
    out.append("")
    out.append(f"Prices checked {book.checked}: {book.source}")
    return "\n".join(out)


def estimate_json(result: Estimate) -> dict[str, Any]:
    inp, outp = result.per_million_by_kind()
    blended = result.per_million_tokens()
    return {
        "memory_mb": result.workload.memory_mb,
        "architecture": result.rate.architecture,
        "region": result.rate.region,
        "ephemeral_mb": result.workload.ephemeral_mb,
        "requests": result.workload.requests,
        "billed_ms_per_request": result.billed_ms_per_request,
        "gb_seconds": str(result.gb_seconds),
        "compute_usd": str(result.compute),
        "requests_usd": str(result.request_cost),
        "ephemeral_usd": str(result.ephemeral),
        "total_usd": str(result.total),
        "per_request_usd": str(result.per_request),
        "per_million_tokens_usd": None if blended is None else str(blended),
        "per_million_input_usd": None if inp is None else str(inp),
        "per_million_output_usd": None if outp is None else str(outp),
        "free_tier_requests_per_month": result.free_requests_per_month(),
        "free_tier_tokens_per_month": result.free_tokens_per_month(),
        "total_after_free_tier_usd": str(result.total_after_free_tier()),
        "managed": {c.offer.id: str(c.cost) for c in result.managed},
    }


# ---------------------------------------------------------------------------
# SnapStart


def snapstart_text(
    cost: SnapStartCost, book: PriceBook, *, hours: Decimal, restores: int, versions: int
) -> str:
    """SnapStart's charges at one memory size, each line with its arithmetic."""
    rate = cost.rate
    seconds = max(hours, cost.minimum_cache_hours) * 3600
    minimum = (
        f" (the {plain(cost.minimum_cache_hours)}-hour minimum)" if hours < cost.minimum_cache_hours else ""
    )
    lines = [
        f"SnapStart at {cost.memory_mb:,} MB in {rate.region} (prices checked {book.snapstart.checked})",
        f"  cache       {cost.memory_mb:,}/1024 GB x {plain(seconds)} s{minimum} x "
        f"${plain(rate.cache_gb_second)}/GB-s = {usd(cost.cache(hours))} per active version",
        f"  restore     {cost.memory_mb:,}/1024 GB x ${plain(rate.restore_gb)}/GB = {usd(cost.per_restore)} "
        "per new environment\n              (plus its Billed Restore Duration, billed as duration)",
    ]
    total = versions * cost.cache(hours) + restores * cost.per_restore
    lines.append(
        f"  total       {versions:,} version(s) x {usd(cost.cache(hours))} + {restores:,} restore(s) x "
        f"{usd(cost.per_restore)} = {usd(total)} over {plain(hours)} hours"
    )
    lines.append(
        f"  (a month is {plain(cost.hours_per_month)} hours: one idle version costs "
        f"{usd(cost.idle_per_month)} a month, with or without traffic)"
    )
    lines.append(
        textwrap.fill(f"Sources: {book.snapstart.source}; {book.snapstart.regional_source}", width=100)
    )
    return "\n".join(lines)


def snapstart_json(cost: SnapStartCost, *, hours: Decimal, restores: int, versions: int) -> dict[str, Any]:
    return {
        "memory_mb": cost.memory_mb,
        "region": cost.rate.region,
        "hours": str(hours),
        "versions": versions,
        "restores": restores,
        "cache_usd_per_version": str(cost.cache(hours)),
        "per_restore_usd": str(cost.per_restore),
        "total_usd": str(versions * cost.cache(hours) + restores * cost.per_restore),
        "idle_usd_per_month": str(cost.idle_per_month),
        "cache_usd_per_gb_second": str(cost.rate.cache_gb_second),
        "restore_usd_per_gb": str(cost.rate.restore_gb),
    }


# ---------------------------------------------------------------------------
# The two functions as cdk.json configures them


def configured_functions(cdk_json: Path = CDK_JSON) -> dict[str, FunctionConfig]:
    """Both functions' settings (memory, architecture, SnapStart), read from cdk.json by ``stacks.config``.

    No CDK import: ``stacks.config`` validates the context on its own, as
    for ``make local``. A bad or missing file is a ``CostInputError``.
    """
    from stacks.config import load_config

    try:
        config = load_config(cdk_json=cdk_json)
    except (OSError, KeyError, ValueError) as exc:
        raise CostInputError(f"cannot read the functions' settings from {cdk_json}: {exc}") from None
    return functions_of(config)


def functions_of(config: AppConfig) -> dict[str, FunctionConfig]:
    """The two functions' settings by name (``llama``, ``embeddings``)."""
    return {"llama": config.llama, "embeddings": config.embeddings}


@dataclass(frozen=True)
class FunctionCost:
    name: str
    setting: FunctionConfig
    request: Estimate
    """One request of the given duration."""
    snapstart: SnapStartCost | None
    snapstart_missing: str | None
    """Why there is no SnapStart figure (no price for the region in prices.json)."""


def function_costs(
    settings: dict[str, FunctionConfig], *, region: str, duration_ms: Decimal, book: PriceBook
) -> list[FunctionCost]:
    out = []
    for name, setting in settings.items():
        request = estimate(
            Workload(
                memory_mb=setting.memory_mb,
                duration_ms=duration_ms,
                requests=1,
                region=region,
                architecture=setting.architecture,
            ),
            book,
        )
        try:
            snap: SnapStartCost | None = snapstart_cost(
                setting.memory_mb, region=region, architecture=setting.architecture, prices=book
            )
            missing = None
        except CostInputError as exc:
            snap, missing = None, str(exc)
        out.append(
            FunctionCost(
                name=name, setting=setting, request=request, snapstart=snap, snapstart_missing=missing
            )
        )
    return out


def functions_text(costs: list[FunctionCost], book: PriceBook, *, region: str, origin: str) -> str:
    seconds = plain(Decimal(costs[0].request.billed_ms_per_request) / MS_PER_S) if costs else "1"
    header = (
        f"{'function':<11} {'memory':>9}  {'arch':<7} {seconds + ' s request':>13} {'per second':>11} "
        f"{'SnapStart idle/month':>21} {'per restore':>12}  SnapStart setting"
    )
    lines = [
        f"The functions as {origin} configures them, prices in {region} (checked {book.checked}; "
        f"SnapStart checked {book.snapstart.checked})",
        "",
        header,
    ]
    for c in costs:
        s = c.setting
        per_second = Decimal(s.memory_mb) / 1024 * c.request.rate.gb_second
        idle = usd(c.snapstart.idle_per_month) if c.snapstart else "not priced"
        restore = usd(c.snapstart.per_restore) if c.snapstart else "not priced"
        setting = "on" if s.snap_start else "off"
        lines.append(
            f"{c.name:<11} {s.memory_mb:>6,} MB  {s.architecture:<7} {usd(c.request.per_request):>13} "
            f"{usd(per_second):>11} {idle:>21} {restore:>12}  {setting}"
        )
    notes = [
        f"{seconds} s request: one invocation billed {costs[0].request.billed_ms_per_request:,} ms "
        f"(memory x duration x $/GB-s) plus the request fee "
        f"({usd(costs[0].request.rate.request * MILLION)} per million); a cold start adds its Init Duration.",
    ]
    snap = next((c.snapstart for c in costs if c.snapstart is not None), None)
    if snap is not None:
        notes.append(
            f"SnapStart idle/month: the snapshot cache of one published version kept active "
            f"{plain(snap.hours_per_month)} hours (GB x {plain(snap.hours_per_month * 3600)} s x "
            f"${plain(snap.rate.cache_gb_second)}/GB-s), charged with or without traffic, for every version "
            "left published; Lambda deletes a snapshot not invoked for 14 days."
        )
        notes.append(
            f"per restore: each new environment restored from the snapshot pays GB x "
            f"${plain(snap.rate.restore_gb)}/GB, and its Billed Restore Duration as duration."
        )
        notes.append(
            "The SnapStart columns are what SnapStart adds where it is on, and would add where it is off "
            "(SnapStart setting: cdk.json's <function>_snap_start)."
        )
    notes += sorted({f"SnapStart not priced: {c.snapstart_missing}" for c in costs if c.snapstart_missing})
    notes.append(
        "Another memory size: python -m benchmarks.cost snapstart --memory-mb 4096 (--help for more); "
        "another request shape: python -m benchmarks.cost --memory-mb M --duration-ms D --requests N."
    )
    lines.append("")
    for note in notes:
        lines.append(
            textwrap.fill(
                note,
                width=100,
                initial_indent="  ",
                subsequent_indent="    ",
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
    return "\n".join(lines)


def functions_json(costs: list[FunctionCost], *, region: str) -> dict[str, Any]:
    return {
        "region": region,
        "functions": {
            c.name: {
                "memory_mb": c.setting.memory_mb,
                "architecture": c.setting.architecture,
                "snap_start": c.setting.snap_start,
                "billed_ms_per_request": c.request.billed_ms_per_request,
                "per_request_usd": str(c.request.per_request),
                "snapstart_idle_usd_per_month": None
                if c.snapstart is None
                else str(c.snapstart.idle_per_month),
                "snapstart_per_restore_usd": None if c.snapstart is None else str(c.snapstart.per_restore),
                "snapstart_missing": c.snapstart_missing,
            }
            for c in costs
        },
    }


def snapstart_results(region: str = DEFAULT_REGION, config: AppConfig | None = None) -> dict[str, Any]:
    """results.json's ``cost`` block: SnapStart's idle monthly cost of each function at cdk.json's memory.

    ``config``: the configuration already read (default: read cdk.json).
    ``snapstart_idle_usd_per_month`` maps function -> dollars (rounded to
    cents), or None where prices.json has no SnapStart price for ``region``
    (``snapstart_basis.missing`` then says why).
    """
    book = load_prices()
    settings = configured_functions() if config is None else functions_of(config)
    idle: dict[str, float | None] = {}
    missing: dict[str, str] = {}
    for name, setting in settings.items():
        try:
            cost = snapstart_cost(
                setting.memory_mb, region=region, architecture=setting.architecture, prices=book
            )
            idle[name] = float(cost.idle_per_month.quantize(CENT))
        except CostInputError as exc:
            idle[name] = None
            missing[name] = str(exc)
    basis: dict[str, Any] = {
        "region": region,
        "memory_mb": {name: s.memory_mb for name, s in settings.items()},
        "architecture": {name: s.architecture for name, s in settings.items()},
        "hours_per_month": float(book.snapstart.hours_per_month),
        "what": "SnapStart cache charge of one published version kept active for a month, at each "
        "function's memory in cdk.json; restores and duration are extra",
        "prices_checked": book.snapstart.checked,
        "source": book.snapstart.source,
    }
    if missing:
        basis["missing"] = missing
    return {"snapstart_idle_usd_per_month": idle, "snapstart_basis": basis}


# ---------------------------------------------------------------------------
# Command line


def _decimal_arg(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except ArithmeticError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _add_function_shape(parser: argparse.ArgumentParser, *, region_help: str) -> None:
    parser.add_argument("--architecture", "--arch", default="x86_64", help="x86_64 (default) or arm64")
    parser.add_argument("--region", help=region_help)
    parser.add_argument(
        "--ephemeral-mb", type=_int, default=512, help="/tmp size, 512-10240 MB (default 512)"
    )


def build_parser() -> dict[str, argparse.ArgumentParser]:
    """One parser per command; ``estimate`` is the one used when no command word is given."""
    est = argparse.ArgumentParser(
        prog="python -m benchmarks.cost",
        description="What N invocations of one Lambda function shape cost, in the seed's breakdown. "
        "Give --duration-ms, or tokens per request with the measured speeds. "
        "Other commands: `functions` (both functions as cdk.json configures them, with SnapStart's idle "
        "cost; the default without arguments), `snapstart` (SnapStart's charges at a memory size), "
        "`logs` (price real REPORT lines), `prices` (the price book).",
    )
    est.add_argument(
        "--memory-mb",
        type=_int,
        required=True,
        help="configured memory, 128-10240 MB (CPU share grows with it: one vCPU per 1,769 MB)",
    )
    _add_function_shape(est, region_help=f"AWS region (default {DEFAULT_REGION}); `prices` lists them")
    est.add_argument("--requests", type=_int, required=True, help="invocations in the month")
    est.add_argument("--duration-ms", type=_decimal_arg, help="duration of one invocation")
    est.add_argument(
        "--tokens-per-request",
        type=_int,
        help="embeddings: tokens embedded per request (same as --prompt-tokens)",
    )
    est.add_argument("--tokens-per-s", type=_decimal_arg, help="embeddings: measured tokens per second")
    est.add_argument("--prompt-tokens", type=_int, help="generation: prompt tokens per request")
    est.add_argument("--prompt-tokens-per-s", type=_decimal_arg, help="generation: prompt-processing speed")
    est.add_argument("--output-tokens", type=_int, help="generation: generated tokens per request")
    est.add_argument("--output-tokens-per-s", type=_decimal_arg, help="generation: generation speed")
    est.add_argument(
        "--overhead-ms",
        type=_decimal_arg,
        default=Decimal(0),
        help="per-request time besides the tokens (parsing, tokenizing), added to the throughput duration",
    )
    est.add_argument("--json", action="store_true", help="print the figures as JSON")

    functions = argparse.ArgumentParser(
        prog="python -m benchmarks.cost functions",
        description="Both functions at the memory and architecture cdk.json gives them: the cost of one "
        "request and SnapStart's idle monthly cost (the snapshot cache of one active version) and cost "
        "per restore. `python -m benchmarks.cost` with no arguments prints this.",
    )
    functions.add_argument(
        "--region", default=DEFAULT_REGION, help=f"prices of this region (default {DEFAULT_REGION})"
    )
    functions.add_argument(
        "--duration-ms",
        type=_decimal_arg,
        default=Decimal(1000),
        help="duration of the request priced (default 1000)",
    )
    functions.add_argument(
        "--cdk-json", type=Path, default=CDK_JSON, help="the cdk.json to read (default: the project's)"
    )
    functions.add_argument("--json", action="store_true", help="print the figures as JSON")

    snap = argparse.ArgumentParser(
        prog="python -m benchmarks.cost snapstart",
        description="SnapStart's charges for one function at a memory size: the snapshot cache per active "
        "published version (per GB-second, at least 3 hours) and the restore charge per new environment.",
    )
    snap.add_argument("--memory-mb", type=_int, required=True, help="configured memory, 128-10240 MB")
    snap.add_argument("--architecture", "--arch", default="x86_64", help="x86_64 (default) or arm64")
    snap.add_argument("--region", default=DEFAULT_REGION, help=f"AWS region (default {DEFAULT_REGION})")
    snap.add_argument("--hours", type=_decimal_arg, help="how long the version is active (default: a month)")
    snap.add_argument(
        "--restores", type=_int, default=0, help="environments restored in that time (default 0)"
    )
    snap.add_argument("--versions", type=_int, default=1, help="published versions kept active (default 1)")
    snap.add_argument("--json", action="store_true", help="print the figures as JSON")

    logs = argparse.ArgumentParser(
        prog="python -m benchmarks.cost logs",
        description="What real invocations cost, from Lambda REPORT lines (plain text or JSON "
        "platform.report records, SnapStart restores included), read from a file or from CloudWatch Logs.",
    )
    source = logs.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--file", type=Path, help="a file of log lines, JSON records or `aws logs filter-log-events` output"
    )
    source.add_argument(
        "--function",
        help="a deployed function's name: read its log group (from its LoggingConfig) with boto3",
    )
    logs.add_argument(
        "--since-hours", type=_decimal_arg, default=Decimal(24), help="CloudWatch: look back this far"
    )
    logs.add_argument(
        "--log-group",
        help="CloudWatch: log group (default: the function's LoggingConfig.LogGroup)",
    )
    _add_function_shape(
        logs,
        region_help=f"--file: the function's region (default {DEFAULT_REGION}); "
        "--function: where to look it up (default: boto3's configured region)",
    )
    logs.add_argument("--json", action="store_true", help="print the figures as JSON")

    prices = argparse.ArgumentParser(prog="python -m benchmarks.cost prices", description="The price book.")
    return {"estimate": est, "functions": functions, "snapstart": snap, "logs": logs, "prices": prices}


def _fail(parser: argparse.ArgumentParser, message: str) -> int:
    """A bad value: say what is wrong, without argparse's usage banner."""
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _estimate_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    args = parser.parse_args(argv)
    input_tokens = args.prompt_tokens if args.prompt_tokens is not None else args.tokens_per_request
    if args.prompt_tokens is not None and args.tokens_per_request is not None:
        return _fail(parser, "give --prompt-tokens or --tokens-per-request, not both")
    input_speed = args.prompt_tokens_per_s if args.prompt_tokens_per_s is not None else args.tokens_per_s
    tokens = Tokens(
        input=input_tokens or 0,
        output=args.output_tokens or 0,
        input_per_s=input_speed,
        output_per_s=args.output_tokens_per_s,
    )
    if tokens.input < 0 or tokens.output < 0:
        return _fail(parser, "token counts must not be negative")
    for name in ("tokens_per_s", "prompt_tokens_per_s", "output_tokens_per_s"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return _fail(parser, f"--{name.replace('_', '-')} must be positive, got {value}")
    try:
        if args.duration_ms is not None:
            duration = args.duration_ms
        elif tokens.total and (tokens.input_per_s or tokens.output_per_s):
            duration = duration_from_throughput(tokens, args.overhead_ms)
        else:
            return _fail(
                parser,
                "give --duration-ms, or token counts with their speeds "
                "(e.g. --tokens-per-request and --tokens-per-s)",
            )
        workload = Workload(
            memory_mb=args.memory_mb,
            duration_ms=duration,
            requests=args.requests,
            region=args.region or DEFAULT_REGION,
            architecture=args.architecture,
            ephemeral_mb=args.ephemeral_mb,
            tokens=tokens,
        )
        result = estimate(workload, book)
    except CostInputError as exc:
        return _fail(parser, str(exc))
    print(json.dumps(estimate_json(result), indent=2) if args.json else report(result, book))
    return 0


def _functions_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    args = parser.parse_args(argv)
    if args.duration_ms < 0:
        return _fail(parser, f"--duration-ms must not be negative, got {args.duration_ms}")
    try:
        settings = configured_functions(args.cdk_json)
        costs = function_costs(settings, region=args.region, duration_ms=args.duration_ms, book=book)
    except CostInputError as exc:
        return _fail(parser, str(exc))
    origin = "cdk.json" if args.cdk_json == CDK_JSON else str(args.cdk_json)
    if args.json:
        print(json.dumps(functions_json(costs, region=args.region), indent=2))
    else:
        print(functions_text(costs, book, region=args.region, origin=origin))
    return 0


def _snapstart_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    args = parser.parse_args(argv)
    hours = args.hours if args.hours is not None else book.snapstart.hours_per_month
    if hours < 0:
        return _fail(parser, f"--hours must not be negative, got {hours}")
    if args.restores < 0 or args.versions < 0:
        return _fail(parser, "--restores and --versions must not be negative")
    try:
        cost = snapstart_cost(args.memory_mb, region=args.region, architecture=args.architecture, prices=book)
    except CostInputError as exc:
        return _fail(parser, str(exc))
    if args.json:
        print(
            json.dumps(
                snapstart_json(cost, hours=hours, restores=args.restores, versions=args.versions), indent=2
            )
        )
    else:
        print(snapstart_text(cost, book, hours=hours, restores=args.restores, versions=args.versions))
    return 0


def _logs_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    args = parser.parse_args(argv)
    inits: tuple[lambda_logs.InitReport, ...] = ()
    try:
        if args.file is not None:
            if not args.file.is_file():
                return _fail(parser, f"no such file: {args.file}")
            found = lambda_logs.parse_log(lambda_logs.split_messages(args.file.read_text()))
            records, inits = list(found.reports), found.inits
            explicit = args.region is not None or args.architecture != "x86_64" or args.ephemeral_mb != 512
            shape = lambda_logs.FunctionShape(
                region=args.region or DEFAULT_REGION,
                architecture=normalise_architecture(args.architecture),
                ephemeral_mb=args.ephemeral_mb,
                assumed=not explicit,
            )
            origin = str(args.file)
        else:
            records, shape, origin = lambda_logs.from_cloudwatch(
                args.function,
                since_hours=float(args.since_hours),
                log_group=args.log_group,
                region=args.region,
            )
        if not records:
            return _fail(parser, f"no REPORT lines or platform.report records in {origin}")
        summary = price(records, shape, book, inits)
    except CostInputError as exc:
        return _fail(parser, str(exc))
    print(json.dumps(summary.as_json(), indent=2) if args.json else summary.text(origin))
    return 0


def _prices_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    parser.parse_args(argv)
    print(f"Prices checked {book.checked} ({PRICES_PATH.name})")
    print(f"Lambda: {book.source}\n  regional rates: {book.regional_source}")
    print(
        f"Free tier per month: {book.free_tier.requests:,} requests, {plain(book.free_tier.gb_seconds)} GB-s"
    )
    print(f"{'region':16} {'arch':7} {'$/GB-s (tier 1)':>16} {'$/M requests':>13} {'$/GB-s /tmp':>13}")
    for region in book.regions:
        for arch in ARCHITECTURES:
            r = book.rate(region, arch)
            print(
                f"{region:16} {arch:7} {plain(r.gb_second):>16} {plain(r.request * MILLION):>13} "
                f"{plain(r.ephemeral_gb_second):>13}"
            )
    snap = book.snapstart
    print(f"SnapStart (checked {snap.checked}): {snap.source}\n  regional rates: {snap.regional_source}")
    print(f"  {snap.architectures}")
    print(f"{'region':16} {'$/GB-s cache':>14} {'$/GB restore':>14}")
    for region in book.regions:
        rate = snap.rates.get(region)
        if rate is None:
            print(f"{region:16} {'not found':>14} {'not found':>14}")
        else:
            print(f"{region:16} {plain(rate.cache_gb_second):>14} {plain(rate.restore_gb):>14}")
    print("Managed alternatives:")
    for m in book.managed:
        print(
            f"  {m.name}: ${plain(m.input_per_million)}/M in, "
            f"${plain(m.output_per_million)}/M out ({m.source})"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parsers = build_parser()
    try:
        book = load_prices()
    except (OSError, KeyError, ValueError) as exc:
        print(f"cannot read {PRICES_PATH}: {exc}", file=sys.stderr)
        return 2
    command = args[0] if args else "functions"
    commands = {
        "functions": _functions_main,
        "snapstart": _snapstart_main,
        "logs": _logs_main,
        "prices": _prices_main,
        "estimate": _estimate_main,
    }
    if command in commands:
        return commands[command](parsers[command], args[1:], book)
    return _estimate_main(parsers["estimate"], args, book)


if __name__ == "__main__":
    raise SystemExit(main())

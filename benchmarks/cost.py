"""What a Lambda workload costs, from its shape or from its real REPORT log lines.

Lambda bills three things per invocation: the request, the compute time
(memory in GB times billed duration in seconds, the duration rounded up to
the next millisecond) and ephemeral storage above the included 512 MB (GB
above 512 MB times the same seconds). Every price comes from
``benchmarks/prices.json``; amounts are exact decimals, rounded to cents only
for display.

Usage::

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
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

PRICES_PATH = Path(__file__).with_name("prices.json")
ARCHITECTURES = ("x86_64", "arm64")
DEFAULT_REGION = "us-east-1"
ARCHITECTURE_ALIASES = {
    "x86": "x86_64",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "arm": "arm64",
    "arm64": "arm64",
}
MB_PER_GB = Decimal(1024)
MS_PER_S = Decimal(1000)
MILLION = Decimal(1_000_000)
CENT = Decimal("0.01")


class CostInputError(ValueError):
    """A workload or price look-up that cannot be priced; the message says why."""


# ---------------------------------------------------------------------------
# Prices


@dataclass(frozen=True)
class LambdaRate:
    """Lambda's prices for one region and architecture."""

    region: str
    architecture: str
    gb_second_tiers: tuple[tuple[Decimal | None, Decimal], ...]
    """(upper bound of the tier in monthly GB-seconds or None for the last, price per GB-second)."""
    request: Decimal
    ephemeral_gb_second: Decimal

    @property
    def gb_second(self) -> Decimal:
        """The first-tier price, which is what nearly every account pays."""
        return self.gb_second_tiers[0][1]


@dataclass(frozen=True)
class ManagedOffer:
    """A managed per-token alternative to self-hosting the model."""

    id: str
    name: str
    kind: str
    input_per_million: Decimal
    output_per_million: Decimal
    region: str
    source: str
    note: str


@dataclass(frozen=True)
class FreeTier:
    requests: int
    gb_seconds: Decimal


@dataclass(frozen=True)
class PriceBook:
    """Everything in prices.json, validated."""

    checked: str
    source: str
    regional_source: str
    memory_mb_range: tuple[int, int]
    ephemeral_mb_range: tuple[int, int]
    ephemeral_included_mb: int
    free_tier: FreeTier
    rates: dict[tuple[str, str], LambdaRate]
    region_names: dict[str, str]
    managed: tuple[ManagedOffer, ...]

    @property
    def regions(self) -> list[str]:
        return sorted(self.region_names)

    def rate(self, region: str, architecture: str) -> LambdaRate:
        arch = normalise_architecture(architecture)
        if region not in self.region_names:
            raise CostInputError(
                f"unknown region {region!r}: prices.json has {', '.join(self.regions)} "
                "(add the region's rates to benchmarks/prices.json)"
            )
        return self.rates[(region, arch)]

    def managed_for(self, kind: str) -> list[ManagedOffer]:
        return [offer for offer in self.managed if offer.kind == kind]


def normalise_architecture(name: str) -> str:
    try:
        return ARCHITECTURE_ALIASES[name.lower()]
    except KeyError:
        raise CostInputError(f"unknown architecture {name!r}: use x86_64 or arm64") from None


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, (str, int)):
        raise CostInputError(f"{where}: price must be a string or integer, got {value!r}")
    return Decimal(str(value))


def load_prices(path: Path = PRICES_PATH) -> PriceBook:
    """Read and check the price file (every price, bound and source in one place)."""
    data = json.loads(path.read_text())
    lam = data["lambda"]
    bounds = lam["duration_tiers"]
    rates: dict[tuple[str, str], LambdaRate] = {}
    names: dict[str, str] = {}
    for region, entry in lam["regions"].items():
        names[region] = entry["name"]
        for arch in ARCHITECTURES:
            raw = entry[arch]
            prices = [_decimal(p, f"{region}/{arch}/gb_second") for p in raw["gb_second"]]
            limits: list[Decimal | None] = [Decimal(b) for b in bounds[arch]]
            limits.append(None)
            if len(prices) != len(limits):
                raise CostInputError(
                    f"{path}: {region}/{arch} has {len(prices)} GB-second prices for {len(limits)} tiers"
                )
            rates[(region, arch)] = LambdaRate(
                region=region,
                architecture=arch,
                gb_second_tiers=tuple(zip(limits, prices, strict=True)),
                request=_decimal(raw["request"], f"{region}/{arch}/request"),
                ephemeral_gb_second=_decimal(raw["ephemeral_gb_second"], f"{region}/{arch}/ephemeral"),
            )
    free = lam["free_tier"]
    managed = tuple(
        ManagedOffer(
            id=m["id"],
            name=m["name"],
            kind=m["kind"],
            input_per_million=_decimal(m["input_per_million"], m["id"]),
            output_per_million=_decimal(m["output_per_million"], m["id"]),
            region=m["region"],
            source=m["source"],
            note=m.get("note", ""),
        )
        for m in data["managed"]
    )
    return PriceBook(
        checked=data["checked"],
        source=lam["source"],
        regional_source=lam["regional_source"],
        memory_mb_range=(lam["memory_mb"]["min"], lam["memory_mb"]["max"]),
        ephemeral_mb_range=(lam["ephemeral_storage_mb"]["min"], lam["ephemeral_storage_mb"]["max"]),
        ephemeral_included_mb=lam["ephemeral_storage_mb"]["included"],
        free_tier=FreeTier(
            requests=free["requests_per_month"], gb_seconds=Decimal(free["gb_seconds_per_month"])
        ),
        rates=rates,
        region_names=names,
        managed=managed,
    )


# ---------------------------------------------------------------------------
# The model


def billed_ms(duration_ms: Decimal | float | int) -> int:
    """Lambda rounds each invocation's duration up to the next millisecond."""
    value = Decimal(str(duration_ms))
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def tiered_compute_cost(gb_seconds: Decimal, rate: LambdaRate) -> Decimal:
    """Compute cost of a month's GB-seconds through the duration price tiers."""
    cost = Decimal(0)
    lower = Decimal(0)
    for upper, price in rate.gb_second_tiers:
        if gb_seconds <= lower:
            break
        portion = gb_seconds - lower if upper is None else min(gb_seconds, upper) - lower
        cost += portion * price
        if upper is None:
            break
        lower = upper
    return cost


@dataclass(frozen=True)
class Tokens:
    """Tokens per request and, when measured, the speeds that set the duration."""

    input: int = 0
    output: int = 0
    input_per_s: Decimal | None = None
    output_per_s: Decimal | None = None

    @property
    def total(self) -> int:
        return self.input + self.output


def duration_from_throughput(tokens: Tokens, overhead_ms: Decimal = Decimal(0)) -> Decimal:
    """Milliseconds a request takes at the given prompt-processing and generation speeds."""
    seconds = Decimal(0)
    for count, speed, label in (
        (tokens.input, tokens.input_per_s, "input"),
        (tokens.output, tokens.output_per_s, "output"),
    ):
        if count == 0:
            continue
        if speed is None or speed <= 0:
            raise CostInputError(
                f"{count} {label} tokens per request need a positive {label} speed (tokens/s)"
            )
        seconds += Decimal(count) / speed
    return seconds * MS_PER_S + overhead_ms


@dataclass(frozen=True)
class Workload:
    memory_mb: int
    duration_ms: Decimal
    requests: int
    region: str = "us-east-1"
    architecture: str = "x86_64"
    ephemeral_mb: int = 512
    tokens: Tokens = field(default_factory=Tokens)

    def validate(self, prices: PriceBook) -> None:
        low, high = prices.memory_mb_range
        if not low <= self.memory_mb <= high:
            raise CostInputError(f"memory must be between {low} and {high} MB, got {self.memory_mb}")
        low, high = prices.ephemeral_mb_range
        if not low <= self.ephemeral_mb <= high:
            raise CostInputError(
                f"ephemeral storage must be between {low} and {high} MB, got {self.ephemeral_mb}"
            )
        if self.duration_ms < 0:
            raise CostInputError(f"duration must not be negative, got {self.duration_ms} ms")
        if self.requests < 1:
            raise CostInputError(f"requests must be at least 1, got {self.requests}")
        if self.tokens.input < 0 or self.tokens.output < 0:
            raise CostInputError("token counts must not be negative")
        prices.rate(self.region, self.architecture)


@dataclass(frozen=True)
class ManagedComparison:
    """What the same tokens would cost on a managed per-token service."""

    offer: ManagedOffer
    cost: Decimal


@dataclass(frozen=True)
class Estimate:
    """The cost of ``requests`` invocations of one shape, in exact decimals."""

    workload: Workload
    rate: LambdaRate
    billed_ms_per_request: int
    gb_seconds: Decimal
    compute: Decimal
    request_cost: Decimal
    ephemeral_gb_seconds: Decimal
    ephemeral: Decimal
    free_tier: FreeTier
    managed: tuple[ManagedComparison, ...]

    @property
    def total(self) -> Decimal:
        return self.compute + self.request_cost + self.ephemeral

    @property
    def per_request(self) -> Decimal:
        return self.total / self.workload.requests

    @property
    def gb_seconds_per_request(self) -> Decimal:
        return self.gb_seconds / self.workload.requests

    @property
    def compute_per_gb_second(self) -> Decimal:
        """Average price paid per GB-second (the first tier's, unless the month is huge)."""
        return self.compute / self.gb_seconds if self.gb_seconds else self.rate.gb_second

    def per_million_tokens(self) -> Decimal | None:
        """Everything billed, spread over every token processed."""
        tokens = self.workload.tokens.total * self.workload.requests
        return self.total / tokens * MILLION if tokens else None

    def per_million_by_kind(self) -> tuple[Decimal | None, Decimal | None]:
        """Compute cost of a million input tokens and of a million output tokens, from measured speeds.

        Request fees and millisecond rounding are left out (they are per
        request, not per token); the blended figure includes them.
        """
        gb = Decimal(self.workload.memory_mb) / MB_PER_GB
        per_second = gb * (self.compute_per_gb_second + self._ephemeral_per_gb_second_of_memory())
        t = self.workload.tokens
        inp = per_second * MILLION / t.input_per_s if t.input_per_s else None
        out = per_second * MILLION / t.output_per_s if t.output_per_s else None
        return inp, out

    def _ephemeral_per_gb_second_of_memory(self) -> Decimal:
        extra_gb = Decimal(self.workload.ephemeral_mb - 512) / MB_PER_GB
        gb = Decimal(self.workload.memory_mb) / MB_PER_GB
        return extra_gb * self.rate.ephemeral_gb_second / gb

    # Free tier -------------------------------------------------------------

    def free_requests_per_month(self) -> int:
        """Requests of this shape the monthly free tier covers (compute and request fees)."""
        per_request = self.gb_seconds_per_request
        by_compute = math.inf if per_request == 0 else int(self.free_tier.gb_seconds / per_request)
        return int(min(self.free_tier.requests, by_compute))

    def free_tokens_per_month(self) -> int:
        return self.free_requests_per_month() * self.workload.tokens.total

    def total_after_free_tier(self) -> Decimal:
        """The bill if this workload were the account's only Lambda use that month."""
        gb_s = max(Decimal(0), self.gb_seconds - self.free_tier.gb_seconds)
        reqs = max(0, self.workload.requests - self.free_tier.requests)
        return tiered_compute_cost(gb_s, self.rate) + reqs * self.rate.request + self.ephemeral


def estimate(workload: Workload, prices: PriceBook | None = None) -> Estimate:
    """Price ``workload.requests`` invocations (one month's volume) of one shape."""
    book = prices or load_prices()
    workload.validate(book)
    rate = book.rate(workload.region, normalise_architecture(workload.architecture))
    per_request_ms = billed_ms(workload.duration_ms)
    seconds = Decimal(per_request_ms) / MS_PER_S * workload.requests
    gb_seconds = Decimal(workload.memory_mb) / MB_PER_GB * seconds
    extra_gb = Decimal(workload.ephemeral_mb - book.ephemeral_included_mb) / MB_PER_GB
    ephemeral_gb_seconds = extra_gb * seconds
    kind = "generation" if workload.tokens.output else "embeddings"
    comparisons = tuple(
        ManagedComparison(
            offer,
            workload.requests
            * (
                workload.tokens.input * offer.input_per_million
                + workload.tokens.output * offer.output_per_million
            )
            / MILLION,
        )
        for offer in book.managed_for(kind)
        if workload.tokens.total
    )
    return Estimate(
        workload=workload,
        rate=rate,
        billed_ms_per_request=per_request_ms,
        gb_seconds=gb_seconds,
        compute=tiered_compute_cost(gb_seconds, rate),
        request_cost=workload.requests * rate.request,
        ephemeral_gb_seconds=ephemeral_gb_seconds,
        ephemeral=ephemeral_gb_seconds * rate.ephemeral_gb_second,
        free_tier=book.free_tier,
        managed=comparisons,
    )


# ---------------------------------------------------------------------------
# Formatting


def _significant(amount: Decimal, digits: int = 3) -> str:
    places = max(0, digits - 1 - abs(amount).adjusted())
    return f"${amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):,}"


def usd(amount: Decimal) -> str:
    """Cents for a cent or more (as a bill shows them); three significant digits below that."""
    if amount == 0:
        return "$0.00"
    if abs(amount) >= CENT:
        return f"${amount.quantize(CENT, rounding=ROUND_HALF_UP):,}"
    return _significant(amount)


def usd_rate(amount: Decimal) -> str:
    """A unit price such as dollars per million tokens: cents from $1 up, three significant digits below."""
    if amount == 0 or abs(amount) >= 1:
        return usd(amount)
    return _significant(amount)


def plain(amount: Decimal) -> str:
    """A decimal without exponent or trailing zeros, with thousands separators."""
    text = f"{amount.normalize():,f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


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
            f"  ephemeral   ({w.ephemeral_mb:,}-512)/1024 GB x {plain(seconds)} s x {w.requests:,} = "
            f"{plain(result.ephemeral_gb_seconds)} GB-s x ${plain(r.ephemeral_gb_second)} "
            f"= {usd(result.ephemeral)}"
        )
    else:
        lines.append("  ephemeral   512 MB is included = $0.00")
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
        out.append("  (ephemeral storage above 512 MB is never free)")
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


def build_parser() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser, argparse.ArgumentParser]:
    est = argparse.ArgumentParser(
        prog="python -m benchmarks.cost",
        description="What N invocations of one Lambda function shape cost, in the seed's breakdown. "
        "Give --duration-ms, or tokens per request with the measured speeds. "
        "Other commands: `logs` (price real REPORT lines), `prices` (the price book).",
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

    logs = argparse.ArgumentParser(
        prog="python -m benchmarks.cost logs",
        description="What real invocations cost, from Lambda REPORT lines (plain text or JSON "
        "platform.report records), read from a file or from CloudWatch Logs.",
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
    return est, logs, prices


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


def _logs_main(parser: argparse.ArgumentParser, argv: Sequence[str], book: PriceBook) -> int:
    from benchmarks import lambda_logs

    args = parser.parse_args(argv)
    try:
        if args.file is not None:
            if not args.file.is_file():
                return _fail(parser, f"no such file: {args.file}")
            records = lambda_logs.parse_lines(lambda_logs.split_messages(args.file.read_text()))
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
        summary = lambda_logs.price(records, shape, book)
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
    print("Managed alternatives:")
    for m in book.managed:
        print(
            f"  {m.name}: ${plain(m.input_per_million)}/M in, "
            f"${plain(m.output_per_million)}/M out ({m.source})"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    est, logs, prices = build_parser()
    try:
        book = load_prices()
    except (OSError, KeyError, ValueError) as exc:
        print(f"cannot read {PRICES_PATH}: {exc}", file=sys.stderr)
        return 2
    if args and args[0] == "logs":
        return _logs_main(logs, args[1:], book)
    if args and args[0] == "prices":
        return _prices_main(prices, args[1:], book)
    if args and args[0] == "estimate":
        args = args[1:]
    return _estimate_main(est, args, book)


if __name__ == "__main__":
    raise SystemExit(main())

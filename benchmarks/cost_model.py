"""What Lambda bills, as exact decimals: workloads, estimates, tiers, free tier, SnapStart, real records.

Lambda bills three things per invocation: the request, the compute time
(memory in GB times billed duration in seconds, the duration rounded up to
the next millisecond) and ephemeral storage above the included 512 MB (GB
above 512 MB times the same seconds). SnapStart adds two charges: caching
the snapshot of each active published version (per GB-second, at least 3
hours) and restoring it into a new environment (per GB); the restore's
billed part (runtime load, after-restore hooks) is billed as duration.

Every price comes from the ``PriceBook`` (``benchmarks/prices.py``, which
reads ``benchmarks/prices.json``); amounts stay exact decimals and are
rounded only by the formatting helpers at the bottom, for display.

Standard library only.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from typing import Any

from benchmarks.lambda_logs import FunctionShape, InitReport, ReportRecord
from benchmarks.prices import (
    MB_PER_GB,
    MILLION,
    MS_PER_S,
    SECONDS_PER_HOUR,
    CostInputError,
    FreeTier,
    LambdaRate,
    ManagedOffer,
    PriceBook,
    SnapStartRate,
    load_prices,
    normalise_architecture,
)

CENT = Decimal("0.01")


# ---------------------------------------------------------------------------
# Billing rules


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


def check_memory(memory_mb: int, prices: PriceBook) -> None:
    low, high = prices.memory_mb_range
    if not low <= memory_mb <= high:
        raise CostInputError(f"memory must be between {low} and {high} MB, got {memory_mb}")


def check_ephemeral(ephemeral_mb: int, prices: PriceBook) -> None:
    low, high = prices.ephemeral_mb_range
    if not low <= ephemeral_mb <= high:
        raise CostInputError(f"ephemeral storage must be between {low} and {high} MB, got {ephemeral_mb}")


# ---------------------------------------------------------------------------
# A workload of one shape


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
        check_memory(self.memory_mb, prices)
        check_ephemeral(self.ephemeral_mb, prices)
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
    ephemeral_included_mb: int
    """Ephemeral storage that comes with every function; only what is above it is billed."""
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
        extra_gb = Decimal(self.workload.ephemeral_mb - self.ephemeral_included_mb) / MB_PER_GB
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
        ephemeral_included_mb=book.ephemeral_included_mb,
        free_tier=book.free_tier,
        managed=comparisons,
    )


# ---------------------------------------------------------------------------
# SnapStart


@dataclass(frozen=True)
class SnapStartCost:
    """What SnapStart adds for one published version of a function at one memory size.

    The cache charge runs while the version is active (at least 3 hours,
    then per millisecond), whether or not it is invoked; the restore charge
    is per new environment restored from the snapshot. Both scale with the
    configured memory.
    """

    memory_mb: int
    rate: SnapStartRate
    minimum_cache_hours: Decimal
    hours_per_month: Decimal

    @property
    def gb(self) -> Decimal:
        return Decimal(self.memory_mb) / MB_PER_GB

    def cache(self, hours: Decimal) -> Decimal:
        """Cache charge of one version active for ``hours`` (billed for at least the minimum)."""
        if hours < 0:
            raise CostInputError(f"hours must not be negative, got {hours}")
        billed_hours = max(hours, self.minimum_cache_hours)
        return self.gb * billed_hours * SECONDS_PER_HOUR * self.rate.cache_gb_second

    @property
    def idle_per_month(self) -> Decimal:
        """One version kept active a whole month: what SnapStart costs with no traffic at all."""
        return self.cache(self.hours_per_month)

    @property
    def per_restore(self) -> Decimal:
        """The restore charge of one new environment (its billed restore time is duration on top)."""
        return self.gb * self.rate.restore_gb

    def month(self, restores: int, versions: int = 1) -> Decimal:
        """Cache of ``versions`` versions for a month plus ``restores`` restores."""
        if restores < 0 or versions < 0:
            raise CostInputError("restores and versions must not be negative")
        return versions * self.idle_per_month + restores * self.per_restore


def snapstart_cost(memory_mb: int, *, region: str, architecture: str, prices: PriceBook) -> SnapStartCost:
    """SnapStart's charges for a function of ``memory_mb`` in ``region`` (an error where unpriced)."""
    check_memory(memory_mb, prices)
    return SnapStartCost(
        memory_mb=memory_mb,
        rate=prices.snapstart_rate(region, architecture),
        minimum_cache_hours=prices.snapstart.minimum_cache_hours,
        hours_per_month=prices.snapstart.hours_per_month,
    )


@dataclass(frozen=True)
class InvocationCost:
    """One reported invocation's charges at the first-tier price."""

    compute: Decimal
    """Billed Duration plus Billed Restore Duration, times memory, at the GB-second price."""
    restore: Decimal
    """SnapStart's restore charge, for an invocation that restored a new environment."""
    request: Decimal

    @property
    def total(self) -> Decimal:
        return self.compute + self.restore + self.request


def invocation_cost(
    record: ReportRecord, rate: LambdaRate, snapstart: SnapStartRate | None
) -> InvocationCost:
    """What one REPORT record cost: a restored one pays its billed restore time and the restore charge."""
    restore = Decimal(0)
    if record.restored:
        if snapstart is None:
            raise CostInputError(
                f"invocation {record.request_id} was restored from a SnapStart snapshot: "
                "pricing it needs the region's SnapStart price"
            )
        restore = Decimal(record.memory_mb) / MB_PER_GB * snapstart.restore_gb
    return InvocationCost(compute=record.gb_seconds * rate.gb_second, restore=restore, request=rate.request)


# ---------------------------------------------------------------------------
# What real invocations cost, from their REPORT records


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
    restore_gb_seconds: Decimal = Decimal(0)
    """Billed Restore Duration times memory (inside ``gb_seconds`` and ``compute``)."""
    restore_gb: Decimal = Decimal(0)
    """GB restored: memory of every restored invocation, the unit of the restore charge."""
    restore_cost: Decimal = Decimal(0)
    snapstart_rate: SnapStartRate | None = None
    inits: tuple[InitReport, ...] = ()

    @property
    def total(self) -> Decimal:
        return self.compute + self.request_cost + self.ephemeral + self.restore_cost

    @property
    def per_invocation(self) -> Decimal:
        return self.total / len(self.records)

    @property
    def cold_starts(self) -> list[ReportRecord]:
        return [r for r in self.records if r.cold]

    @property
    def restores(self) -> list[ReportRecord]:
        return [r for r in self.records if r.restored]

    @property
    def init_cost(self) -> Decimal:
        """Compute spent in billed init phases (priced at the average GB-second price)."""
        return self.compute * self.init_gb_seconds / self.gb_seconds if self.gb_seconds else Decimal(0)

    @property
    def restore_duration_cost(self) -> Decimal:
        """Compute spent in billed restore time (priced at the average GB-second price)."""
        return self.compute * self.restore_gb_seconds / self.gb_seconds if self.gb_seconds else Decimal(0)

    def text(self, origin: str) -> str:
        n = len(self.records)
        cold = self.cold_starts
        restored = self.restores
        memories = sorted({r.memory_mb for r in self.records})
        assumed = " (assumed: pass --region/--arch/--ephemeral-mb)" if self.shape.assumed else ""
        billed = sum(r.billed_total_ms for r in self.records)
        kinds = f"{len(cold):,} cold"
        if restored:
            kinds += f", {len(restored):,} restored from a SnapStart snapshot"
        lines = [
            f"{n:,} invocations ({kinds}) in {origin}",
            f"  memory {', '.join(f'{m:,}' for m in memories)} MB, "
            f"{self.rate.architecture} in {self.rate.region}, "
            f"{self.shape.ephemeral_mb:,} MB ephemeral storage{assumed}",
            f"  billed      {billed:,} ms = {plain(self.gb_seconds)} GB-s",
            f"  compute     {plain(self.gb_seconds)} GB-s x ${plain(self.rate.gb_second)}/GB-s "
            f"= {usd(self.compute)}",
            f"  requests    {n:,} x {usd(self.rate.request * MILLION)}/M = {usd(self.request_cost)}",
            f"  ephemeral   {plain(self.ephemeral_gb_seconds)} GB-s x ${plain(self.rate.ephemeral_gb_second)}"
            f" = {usd(self.ephemeral)}",
        ]
        if restored and self.snapstart_rate is not None:
            lines.append(
                f"  restores    {plain(self.restore_gb)} GB restored x "
                f"${plain(self.snapstart_rate.restore_gb)}/GB = {usd(self.restore_cost)} "
                "(SnapStart restore charge)"
            )
        lines.append(f"  total       {usd(self.total)}  ({usd(self.per_invocation)} per invocation)")
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
        if restored:
            restore_ms = [float(r.restore_ms or 0) for r in restored]
            billed_restore = sum(r.billed_restore_ms or 0 for r in restored)
            lines.append(
                f"  Restores: {len(restored):,}, Restore Duration median "
                f"{statistics.median(restore_ms):,.1f} ms, max {max(restore_ms):,.1f} ms; "
                f"Billed Restore Duration {billed_restore:,} ms, billed as duration "
                f"= {usd(self.restore_duration_cost)} of the compute"
            )
        if self.inits:
            durations_init = [float(i.duration_ms) for i in self.inits]
            failed = sum(1 for i in self.inits if i.failed)
            lines.append(
                f"  INIT_REPORT records: {len(self.inits):,} (SnapStart versions' inits at publish, or inits "
                f"reported apart), Init Duration median {statistics.median(durations_init):,.1f} ms, "
                f"{failed} failed; not priced here (the record carries no memory size)"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "invocations": len(self.records),
            "cold_starts": len(self.cold_starts),
            "restores": len(self.restores),
            "region": self.rate.region,
            "architecture": self.rate.architecture,
            "ephemeral_mb": self.shape.ephemeral_mb,
            "billed_ms": sum(r.billed_ms for r in self.records),
            "billed_restore_ms": sum(r.billed_restore_ms or 0 for r in self.records),
            "gb_seconds": str(self.gb_seconds),
            "compute_usd": str(self.compute),
            "requests_usd": str(self.request_cost),
            "ephemeral_usd": str(self.ephemeral),
            "restore_gb": str(self.restore_gb),
            "restore_usd": str(self.restore_cost),
            "total_usd": str(self.total),
            "per_invocation_usd": str(self.per_invocation),
            "init_gb_seconds": str(self.init_gb_seconds),
            "init_usd": str(self.init_cost),
            "restore_gb_seconds": str(self.restore_gb_seconds),
            "init_reports": len(self.inits),
        }


def price(
    records: Iterable[ReportRecord],
    shape: FunctionShape,
    prices: PriceBook,
    inits: Sequence[InitReport] = (),
) -> LogCost:
    """What the reported invocations cost (no free tier: it is shared by the whole account).

    A restored invocation pays its Billed Restore Duration as duration and
    SnapStart's restore charge; pricing one in a region without a SnapStart
    price in prices.json is an error, not a guess.
    """
    items = tuple(records)
    if not items:
        raise CostInputError("no REPORT records to price")
    check_ephemeral(shape.ephemeral_mb, prices)
    rate = prices.rate(shape.region, shape.architecture)
    restored = [r for r in items if r.restored]
    snap: SnapStartRate | None = None
    if restored:
        try:
            snap = prices.snapstart_rate(shape.region, shape.architecture)
        except CostInputError as exc:
            raise CostInputError(
                f"{len(restored)} invocations were restored from a SnapStart snapshot: {exc}"
            ) from None
    gb_seconds = sum((r.gb_seconds for r in items), Decimal(0))
    seconds = sum((Decimal(r.billed_total_ms) / MS_PER_S for r in items), Decimal(0))
    extra_gb = Decimal(shape.ephemeral_mb - prices.ephemeral_included_mb) / MB_PER_GB
    init_gb_seconds = sum(
        (
            Decimal(r.memory_mb) / MB_PER_GB * (r.init_ms or Decimal(0)) / MS_PER_S
            for r in items
            if r.init_billed
        ),
        Decimal(0),
    )
    restore_gb_seconds = sum(
        (Decimal(r.memory_mb) / MB_PER_GB * Decimal(r.billed_restore_ms or 0) / MS_PER_S for r in restored),
        Decimal(0),
    )
    restore_gb = sum((Decimal(r.memory_mb) / MB_PER_GB for r in restored), Decimal(0))
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
        restore_gb_seconds=restore_gb_seconds,
        restore_gb=restore_gb,
        restore_cost=restore_gb * snap.restore_gb if snap is not None else Decimal(0),
        snapstart_rate=snap,
        inits=tuple(inits),
    )


# ---------------------------------------------------------------------------
# Formatting money


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

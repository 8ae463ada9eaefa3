"""Projecting speeds measured here onto Lambda memory sizes, and pricing them.

Every figure from this module is a projection, not a measurement, and carries
its assumption: Lambda gives one vCPU of CPU time per 1,769 MB; the handler
runs floor(memory / 1,769) threads (at least one, at most the CPUs Lambda
shows); speed scales linearly from the single-thread speed measured on this
machine up to the smaller of the thread count and the CPU share. Lambda's
CPUs are not this machine's, and threads rarely scale linearly, so treat the
curve as a guide to the shape, then measure on Lambda.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from benchmarks.cost_model import Tokens, Workload, duration_from_throughput, estimate
from benchmarks.prices import PriceBook, load_prices
from lambda_common.cpu import default_threads
from lambda_common.limits import MB_PER_VCPU

MEMORY_SIZES_MB = (512, 1024, 1769, 2048, 3008, 3538, 4096, 5307, 6144, 7076, 8192, 8845, 10240)

VISIBLE_CPUS_ASSUMPTION = (
    "CPUs Lambda shows: 2 up to 3,008 MB, then one more per 1,769 MB up to 6 at 8,846 MB and above "
    "(reported by measurements, not documented by AWS)"
)


def lambda_visible_cpus(memory_mb: int) -> int:
    """CPUs a Lambda function sees at ``memory_mb`` (measured by others, not an AWS guarantee)."""
    if memory_mb <= 3008:
        return 2
    return int(min(6, max(3, -(-memory_mb // MB_PER_VCPU))))


def lambda_threads(memory_mb: int) -> int:
    """Threads the handlers use at ``memory_mb`` on Lambda (their CPU-share default)."""
    return int(default_threads(memory_mb, lambda_visible_cpus(memory_mb)))


def effective_cpus(memory_mb: int) -> float:
    """CPUs' worth of work: the threads, capped by the CPU time Lambda grants."""
    return float(min(float(lambda_threads(memory_mb)), memory_mb / float(MB_PER_VCPU)))


def assumption(single_thread: dict[str, float]) -> str:
    """The label every projected figure carries."""
    speeds = ", ".join(f"{name} {value:,.1f} tokens/s" for name, value in single_thread.items())
    return (
        f"Projection, not a measurement: 1 vCPU of CPU time per {MB_PER_VCPU:,} MB; threads = "
        f"floor(memory/{MB_PER_VCPU:,}), at least 1; speed = single-thread speed measured here "
        f"({speeds}) x min(threads, memory/{MB_PER_VCPU:,}), i.e. linear scaling on Lambda x86_64 "
        "CPUs as fast as this machine's; request fees and cold starts left out."
    )


def usd_per_million(
    memory_mb: int, tokens_per_s: float, prices: PriceBook, *, region: str, arch: str
) -> Decimal:
    """Compute cost of a million tokens at ``tokens_per_s`` on ``memory_mb``, by the cost model."""
    tokens = Tokens(input=1_000_000, input_per_s=Decimal(repr(tokens_per_s)))
    workload = Workload(
        memory_mb=memory_mb,
        duration_ms=duration_from_throughput(tokens),
        requests=1,
        region=region,
        architecture=arch,
        tokens=tokens,
    )
    per_input, _ = estimate(workload, prices).per_million_by_kind()
    if per_input is None:  # pragma: no cover - a speed was given
        raise ValueError("no speed to price")
    return per_input


def project(
    single_thread: dict[str, float],
    *,
    region: str = "us-east-1",
    arch: str = "x86_64",
    memory_sizes: tuple[int, ...] = MEMORY_SIZES_MB,
    prices: PriceBook | None = None,
) -> dict[str, Any]:
    """Projected speed and cost per million tokens at each memory size, per measured series."""
    book = prices or load_prices()
    rows = []
    for memory in memory_sizes:
        cpus = effective_cpus(memory)
        row: dict[str, Any] = {"memory_mb": memory, "threads": lambda_threads(memory), "effective_cpus": cpus}
        for name, speed in single_thread.items():
            projected = speed * cpus
            row[f"{name}_tokens_per_s"] = projected
            row[f"{name}_usd_per_million"] = float(
                usd_per_million(memory, projected, book, region=region, arch=arch)
            )
        rows.append(row)
    return {
        "projection": True,
        "assumption": assumption(single_thread),
        "visible_cpus_assumption": VISIBLE_CPUS_ASSUMPTION,
        "region": region,
        "architecture": arch,
        "prices_checked": book.checked,
        "single_thread_tokens_per_s": single_thread,
        "rows": rows,
    }

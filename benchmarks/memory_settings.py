"""The embeddings function at 2,048 MB against 8,192 MB: latency and cost per million tokens, from the sweep.

Lambda runs the handler with one thread per whole vCPU of CPU share (at least
one, at most the visible CPUs minus one): 1 thread at 2,048 MB, 4 at 8,192 MB.
The embeddings thread sweep (``embeddings_bench.thread_sweep``, the bare ONNX
Runtime pipeline at 1..visible CPUs threads) measured each count here; each
memory size takes the row of its thread count, capped by this machine's CPUs,
and its cost per million tokens is the cost model's price of that memory size
at the 32-text batch's measured speed.
"""

from __future__ import annotations

from typing import Any

from benchmarks.prices import load_prices
from benchmarks.projection import lambda_threads, usd_per_million
from lambda_common.limits import MB_PER_VCPU

MEMORY_SIZES_MB = (2048, 8192)
"""The cheaper setting docs/configuration.md describes, and cdk.json's default."""


def memory_settings(
    embeddings: dict[str, Any], *, region: str, arch: str = "x86_64", sizes: tuple[int, ...] = MEMORY_SIZES_MB
) -> dict[str, Any] | None:
    """results.json's ``embeddings.memory_settings``; None when the thread sweep did not run."""
    sweep = {row["threads"]: row for row in embeddings.get("thread_sweep") or []}
    if not sweep:
        return None
    book = load_prices()
    here = max(sweep)
    rows = []
    for memory in sizes:
        wanted = lambda_threads(memory)
        threads = min(wanted, here)
        row = sweep[threads]
        tokens_per_s = float(row["batch32_tokens_per_s"])
        rows.append(
            {
                "memory_mb": memory,
                "lambda_threads": wanted,
                "threads_measured": threads,
                "capped": threads < wanted,
                "cpu_share": memory / MB_PER_VCPU,
                "query_p50_ms": row["query_ms"]["median"],
                "batch32_p50_ms": row["batch32_ms"]["median"],
                "batch32_tokens_per_s": tokens_per_s,
                "usd_per_million_tokens": float(
                    usd_per_million(memory, tokens_per_s, book, region=region, arch=arch)
                ),
            }
        )
    return {
        "rows": rows,
        "query_tokens": embeddings.get("sweep_query_tokens"),
        "batch_text_tokens": embeddings.get("batch_text_tokens"),
        "visible_cpus": here,
        "region": region,
        "architecture": arch,
        "prices_checked": book.checked,
        "method": (
            "Bare ONNX Runtime pipeline (embeddings thread sweep), each memory size at the threads Lambda's "
            f"handler uses there (floor(memory/{MB_PER_VCPU:,}), at most visible CPUs - 1), capped by the "
            f"{here} CPUs of the bench machine; USD per million tokens = the cost model's price of that "
            "memory size at the 32-text batch's speed measured here (compute only)."
        ),
    }

"""Medians and spread of repeated measurements."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, interquartile range, p95, min, max and the raw values."""
    if not values:
        raise ValueError("no values to summarize")
    return {
        "median": statistics.median(values),
        "p25": percentile(values, 25),
        "p75": percentile(values, 75),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": [round(v, 6) for v in values],
    }


def spread(summary: dict[str, Any], digits: int = 1) -> str:
    """``median (IQR p25-p75, n=N)`` for tables."""
    return (
        f"{summary['median']:,.{digits}f} (IQR {summary['p25']:,.{digits}f}-{summary['p75']:,.{digits}f}, "
        f"n={summary['n']})"
    )


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Median of the values that were measured; None if none was (a log line was missing)."""
    present = [v for v in values if v is not None and v == v]
    return statistics.median(present) if present else None

"""The moment an invocation's work must stop: Lambda's deadline minus a safety margin."""

from __future__ import annotations

import time
from typing import Any


class Deadline:
    """When work must stop (``at``, on the ``time.perf_counter`` clock), or never (``at`` is None)."""

    def __init__(self, remaining_ms: float | None, margin_ms: float, *, now: float | None = None) -> None:
        start = time.perf_counter() if now is None else now
        self.at = None if remaining_ms is None else start + (remaining_ms - margin_ms) / 1000.0

    @classmethod
    def none(cls) -> Deadline:
        return cls(None, 0)

    @classmethod
    def of(cls, context: Any, margin_ms: float) -> Deadline:
        """The deadline of the invocation ``context`` describes (none outside Lambda)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        if remaining is None:
            return cls.none()
        return cls(float(remaining()), margin_ms)

    def passed(self) -> bool:
        return self.at is not None and time.perf_counter() >= self.at

    def remaining_ms(self) -> float | None:
        return None if self.at is None else (self.at - time.perf_counter()) * 1000.0

    def remaining_s(self) -> float | None:
        remaining = self.remaining_ms()
        return None if remaining is None else remaining / 1000.0

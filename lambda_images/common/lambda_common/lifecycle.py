"""The life of one execution environment: init, an optional SnapStart snapshot and restore, invocations.

Both functions report how the environment that served a request started: the
first invocation after a normal init is a cold start (it paid ``init_ms``);
the first one after a SnapStart restore is a restore (it paid ``restore_ms``
instead, and no init happened in its lifetime); every later one is warm.

SnapStart snapshots the environment once, after init, and restores many
copies of it. Everything that must differ between copies is renewed by the
after-restore hooks registered here (``snapshot_restore_py``, which both the
AWS runtime client and this project's runtime loop run): Python's and NumPy's
random state. Functions register their own hooks (a key to re-read, a model
to warm) with ``on_snapshot`` / ``on_restore``.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Any, Literal

from snapshot_restore_py import register_after_restore, register_before_snapshot

StartKind = Literal["cold", "restored", "warm"]


_IMPORTED = time.perf_counter()


def process_age_ms() -> float:
    """How long this process has existed: on Lambda, the init phase so far (the runtime is its process)."""
    try:
        with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
            started_ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
            return (float(uptime.read().split()[0]) - started_ticks / os.sysconf("SC_CLK_TCK")) * 1000.0
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        return (time.perf_counter() - _IMPORTED) * 1000.0


class Lifecycle:
    """Init and restore timings, and whether the next invocation is this environment's first."""

    def __init__(self) -> None:
        self.init_ms: float | None = None
        self.restored = False
        self.restore_ms: float | None = None
        self._first = True

    def init_done(self) -> float:
        """Mark the end of the init work; returns its duration in milliseconds from the process start."""
        self.init_ms = process_age_ms()
        return self.init_ms

    def take_start(self) -> StartKind:
        """How the environment serving this invocation started (cold or restored once, then warm)."""
        if not self._first:
            return "warm"
        self._first = False
        return "restored" if self.restored else "cold"

    def mark_restored(self, restore_ms: float) -> None:
        self.restored = True
        self.restore_ms = restore_ms
        self._first = True


def reseed() -> None:
    """New random state, so restored copies of one snapshot do not draw the same numbers."""
    random.seed(os.urandom(32))
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - both images ship NumPy
        return
    np.random.seed(int.from_bytes(os.urandom(4), "little"))


def on_snapshot(hook: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``hook`` before a SnapStart snapshot (hooks run in reverse order of registration)."""
    register_before_snapshot(hook)
    return hook


def on_restore(hook: Callable[[], Any]) -> Callable[[], Any]:
    """Run ``hook`` after a SnapStart restore (in order of registration)."""
    register_after_restore(hook)
    return hook


_restore_started = 0.0


def _restore_begins() -> None:
    global _restore_started
    _restore_started = time.perf_counter()
    reseed()


def restore_ms() -> float:
    """Time since the after-restore hooks began (the first one is registered when this module loads)."""
    return (time.perf_counter() - _restore_started) * 1000.0


register_after_restore(_restore_begins)

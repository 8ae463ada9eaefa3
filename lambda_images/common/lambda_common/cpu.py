"""What the Lambda execution environment tells a handler about itself.

Lambda gives a function CPU time in proportion to its memory: one vCPU of time
per 1,769 MB, and shows it between 2 and 6 CPUs. Inference libraries default
to one thread per visible CPU, which oversubscribes the share at most memory
sizes, so the handlers size their thread pools from the share instead.
"""

from __future__ import annotations

import math
import os

from lambda_common.limits import MB_PER_VCPU


def visible_cpus() -> int:
    """CPUs this process may run on (respects affinity masks, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_share(memory_mb: int) -> float:
    """vCPUs' worth of CPU time Lambda grants at ``memory_mb``."""
    return memory_mb / MB_PER_VCPU


def default_threads(memory_mb: int | None, cpus: int) -> int:
    """Thread count for compute-bound inference at a given memory size.

    One thread per whole vCPU of CPU share (rounded down, at least one), and one
    visible CPU left for everything else (the runtime client, the OS). Without a
    memory size (not on Lambda) the share is every visible CPU.

    Why one CPU is left free: llama.cpp's threads meet at a barrier after every
    operation, so one preempted thread stalls them all. On a shared 2-core
    machine SmolLM2 decoded at 78-124 tokens/s on one thread and 6-26 on two
    (6 alternating rounds; prompt processing 107-225 vs 53-77). At Lambda's
    usual sizes the share is below the visible count anyway (8192 MB: 4.6 vCPU,
    5 visible, 4 threads); the rule bites only where they are equal.
    """
    if cpus < 1:
        raise ValueError(f"cpus must be at least 1, got {cpus}")
    spare = max(1, cpus - 1)
    if memory_mb is None:
        return spare
    if memory_mb < 1:
        raise ValueError(f"memory_mb must be positive, got {memory_mb}")
    return max(1, min(spare, math.floor(cpu_share(memory_mb))))


def lambda_memory_mb() -> int | None:
    """Memory size of this function, from the variable Lambda sets, if any."""
    raw = os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise ValueError(f"AWS_LAMBDA_FUNCTION_MEMORY_SIZE is not an integer: {raw!r}") from exc
    return value


def resolve_threads(override: int | None) -> int:
    """The thread count to use: an explicit override, else the CPU-share default."""
    if override is not None:
        if override < 1:
            raise ValueError(f"thread override must be at least 1, got {override}")
        return override
    return default_threads(lambda_memory_mb(), visible_cpus())

"""The machine a benchmark ran on, recorded with its results."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lambda_common.cpu import visible_cpus

LIBRARIES = (
    "llama_cpp_python",
    "onnxruntime",
    "tokenizers",
    "torch",
    "sentence-transformers",
    "transformers",
    "numpy",
    "awslambdaric",
)
CPU_FLAGS = (
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
)


def _cpuinfo() -> tuple[str, set[str], int]:
    model, physical = platform.processor() or platform.machine(), 0
    flags: set[str] = set()
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return model, flags, physical
    cores: set[tuple[str, str]] = set()
    physical_id = core_id = ""
    for line in path.read_text().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name":
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "physical id":
            physical_id = value
        elif key == "core id":
            core_id = value
            cores.add((physical_id, core_id))
    return model, flags, len(cores)


def _memory_gib() -> float | None:
    path = Path("/proc/meminfo")
    if not path.is_file():
        return None
    for line in path.read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return None


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def describe() -> dict[str, Any]:
    """CPU model and flags, cores, memory, kernel, Python and library versions, date."""
    model, flags, physical = _cpuinfo()
    present = [flag for flag in CPU_FLAGS if flag in flags]
    return {
        "cpu_model": model,
        "architecture": platform.machine(),
        "cpu_flags": present,
        "avx512": any(flag.startswith("avx512") for flag in flags),
        "logical_cpus": os.cpu_count(),
        "visible_cpus": visible_cpus(),
        "physical_cores": physical or None,
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": {name: version for name in LIBRARIES if (version := _version(name)) is not None},
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
    }

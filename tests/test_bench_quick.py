"""`make bench` in quick mode, for real: both handlers under the real Runtime Interface
Emulator and the bare libraries, on the embedded models. No timing is asserted
(the machine is shared); only that the run completes and reports everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = (
    "llama.handler_tokens_per_s",
    "llama.bare_tokens_per_s",
    "llama.cold_start_s",
    "llama.handler_vs_bare_tokens_per_s",
    "llama.best_threads",
    "llama.default_threads_within_10pct",
    "embeddings.cold_start_s",
    "embeddings.handler_p50_ms",
    "embeddings.bare_p50_ms",
    "embeddings.handler_p95_ms",
    "embeddings.batch_handler_p50_ms",
    "embeddings.tokens_per_s",
    "embeddings.best_batch",
    "embeddings.handler_vs_bare_p50",
    "machine.cpu_model",
    "machine.avx512",
    "machine.visible_cpus",
    "machine.memory_gib",
    "machine.kernel",
    "machine.python",
    "machine.libraries.llama_cpp_python",
    "machine.libraries.onnxruntime",
    "machine.date",
    "projection.assumption",
)


@pytest.mark.slow
def test_quick_bench_writes_every_required_result(tmp_path: Path) -> None:
    # Given the embedded models and an output folder outside benchmarks/
    readme_before = (ROOT / "README.md").read_text() if (ROOT / "README.md").is_file() else None

    # When `python -m benchmarks --quick` runs
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )

    # Then it succeeds, showing progress
    assert done.returncode == 0, done.stderr[-4000:]
    assert "llama: cold start 1/1 handler" in done.stderr
    assert "embeddings: batch sweep 1/1 done" in done.stderr
    # and results.json holds every required key with a real value
    results = json.loads((tmp_path / "results.json").read_text())
    for key in REQUIRED:
        value = report.lookup(results, key)
        assert value is not None, key
    assert results["quick"] is True
    assert results["llama"]["handler_tokens_per_s"] > 0
    assert results["embeddings"]["tokens_per_s"] > 0
    assert results["llama"]["handler_logged_threads"] == results["llama"]["threads"]
    assert results["embeddings"]["handler_logged_threads"] == results["embeddings"]["threads"]
    # and the Markdown table and both charts are written beside it
    assert "Benchmark results" in (tmp_path / "results.md").read_text()
    for chart in (report.LATENCY_CHART, report.COST_CHART):
        assert (tmp_path / "charts" / chart).read_bytes()[:4] == b"\x89PNG"
    # and nothing published was touched by a run elsewhere
    readme_after = (ROOT / "README.md").read_text() if (ROOT / "README.md").is_file() else None
    assert readme_after == readme_before

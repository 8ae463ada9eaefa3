"""`make bench` in quick mode, for real: both handlers under the real Runtime Interface
Emulator and the bare libraries, on the embedded models; the generator streaming through
`make local`'s Function URL front; both functions checkpointed and restored by CRIU (the
``criu`` fixture builds it or fails saying why); the bulk-embedding function with S3 as moto's
server (AWS itself cannot exist here). No timing is asserted (the machine is shared); only
that the run completes and reports everything.
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
    # streaming through the Function URL front, against the bare library streaming
    "llama.stream_first_byte_ms",
    "llama.stream_tokens_per_s",
    "llama.bare_first_token_ms",
    "llama.bare_stream_tokens_per_s",
    "llama.stream_vs_bare_first_token",
    "llama.stream_vs_bare_tokens_per_s",
    "llama.stream_method",
    # structured output against free generation
    "llama.json_schema_tokens_per_s",
    "llama.free_chat_tokens_per_s",
    "llama.json_schema_vs_free_tokens_per_s",
    "llama.json_schema_method",
    # metrics off against on
    "llama.metrics_off_vs_on_tokens_per_s",
    "embeddings.metrics_off_vs_on_p50",
    "llama.metrics_method",
    "embeddings.metrics_method",
    # bulk embedding against the online handler, and its price
    "batch.tokens_per_s_per_function",
    "batch.vs_online_tokens_per_s",
    "batch.usd_per_million_tokens_projected",
    "batch.method",
    "batch.cost_method",
    # the cheaper embeddings setting
    "embeddings.memory_settings.rows",
    # SnapStart's idle cost
    "cost.snapstart_idle_usd_per_month.llama",
    "cost.snapstart_idle_usd_per_month.embeddings",
)
SNAPSTART = tuple(
    f"{function}.{key}"
    for function in ("llama", "embeddings")
    for key in ("init_s", "restore_to_first_token_s", "cold_first_token_s", "restore_vs_cold_first_token")
)
"""Real values from a CRIU checkpoint (the bench writes null and the reason where CRIU cannot run)."""


def published() -> list[str]:
    """The generated parts of the published pages (other text in them may change meanwhile)."""

    def between(path: Path, start: str, end: str) -> str:
        text = path.read_text()
        return text[text.index(start) : text.index(end)]

    return [
        between(ROOT / "README.md", report.START_MARKER, report.END_MARKER),
        between(report.CONFIGURATION_DOC, report.MEMORY_START_MARKER, report.MEMORY_END_MARKER),
        report.PERFORMANCE_DOC.read_text(),
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("criu")
def test_quick_bench_writes_every_required_result(tmp_path: Path) -> None:
    # Given the embedded models, CRIU, and an output folder outside benchmarks/
    before = published()

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
    assert "llama: stream 1/1" in done.stderr
    assert "batch: round 1/1" in done.stderr
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
    # and the streamed generator ran the bench's thread count, and streamed more than one token
    assert results["llama"]["stream_logged_threads"] == results["llama"]["threads"]
    assert results["llama"]["stream_tokens"] > 1
    assert results["batch"]["tokens"] > 0
    assert [row["memory_mb"] for row in results["embeddings"]["memory_settings"]["rows"]] == [2048, 8192]
    # and SnapStart came from a real checkpoint (the criu fixture made sure CRIU runs here)
    for key in SNAPSTART:
        value = report.lookup(results, key)
        assert value is not None, key
        assert value > 0, key
    # and the Markdown table and both charts are written beside it
    assert "Benchmark results" in (tmp_path / "results.md").read_text()
    for chart in (report.LATENCY_CHART, report.COST_CHART):
        assert (tmp_path / "charts" / chart).read_bytes()[:4] == b"\x89PNG"
    # and nothing published was touched by a run elsewhere
    assert published() == before

"""The benchmark report: everything published comes from results.json, and projections say so.

The results here are made by the benchmark's own summarizers from generated
measurements (no model runs), so the tests are fast; tests/test_bench_quick.py
runs the real benchmark.
"""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import pytest

from benchmarks import __main__ as bench
from benchmarks import embeddings_bench, llama_bench, report
from benchmarks.machine import describe
from benchmarks.stats import summarize


def _measurements(seed: int) -> dict[str, Any]:
    """A complete results document from generated measurements, through the real summarizers."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets

    def jitter(base: float) -> float:
        return base * rng.uniform(0.9, 1.1)

    llama_cfg = llama_bench.LlamaBenchConfig(gguf=Path(__file__), memory_mb=8192, repeats=5, cold_repeats=3)
    rounds = {
        side: [
            {
                "ttft_ms": jitter(base * 2),
                "long_prompt_ttft_ms": jitter(base * 20),
                "prompt_tokens_per_s": jitter(900 / base),
                "tokens_per_s": jitter(300 / base),
                "generated_tokens": 128.0,
                "long_prompt_tokens": 512.0,
            }
            for _ in range(5)
        ]
        for side, base in (("handler", rng.uniform(4, 6)), ("bare", rng.uniform(3, 5)))
    }
    cold = [
        {
            "cold_start_s": jitter(2.5),
            "emulator_ready_s": jitter(0.05),
            "first_invoke_s": jitter(2.4),
            "rie_init_ms": jitter(900),
            "handler_init_ms": jitter(850),
            "first_token_ms": jitter(60),
        }
        for _ in range(3)
    ]
    sweep = [
        {
            "threads": t,
            "tokens_per_s": summarize([jitter(70 / t) for _ in range(5)]),
            "prompt_tokens_per_s": summarize([jitter(200 * t) for _ in range(5)]),
        }
        for t in (1, 2)
    ]
    llama = llama_bench._summarise(
        llama_cfg,
        2,
        2,
        {"n_ctx": 4096, "n_batch": 512, "use_mmap": True},
        cold,
        [jitter(2.0) for _ in range(3)],
        rounds,
        sweep,
    )

    emb_cfg = embeddings_bench.EmbeddingsBenchConfig(
        model_dir=Path("/nonexistent"), model_id="org/model", backend="onnx", memory_mb=2048
    )
    emb_cold = [
        {
            "cold_start_s": jitter(1.2),
            "emulator_ready_s": jitter(0.05),
            "first_invoke_s": jitter(1.1),
            "rie_init_ms": jitter(1000),
            "handler_init_ms": jitter(400),
            "first_request_ms": jitter(12),
            "warm_request_ms": jitter(9),
            "imports_ms": jitter(600),
            "threads": 1,
        }
        for _ in range(3)
    ]
    by_batch = {
        b: {"handler": [jitter(5 + 4 * b) for _ in range(5)], "bare": [jitter(3 + 4 * b) for _ in range(5)]}
        for b in embeddings_bench.BATCH_SIZES
    }
    embeddings = embeddings_bench._summarise(
        emb_cfg,
        1,
        2,
        emb_cold,
        [jitter(0.8) for _ in range(3)],
        {"handler": [jitter(40) for _ in range(30)], "bare": [jitter(35) for _ in range(30)]},
        {"handler": [jitter(300) for _ in range(30)], "bare": [jitter(280) for _ in range(30)]},
        by_batch,
        256,
        128,
        jitter(3000),
        {"threads": 1, "max_input_length": 256},
    )
    results: dict[str, Any] = {
        "schema": 1,
        "command": "python -m benchmarks",
        "quick": False,
        "machine": describe(),
        "llama": llama,
        "embeddings": embeddings,
        "busy": {"load_before": [0.1, 0.2, 0.3], "load_after": [0.4, 0.3, 0.3]},
    }
    results["projection"] = bench.projection(results, "us-east-1")
    return results


@pytest.fixture
def results() -> dict[str, Any]:
    return _measurements(seed=1)


def _numbers(text: str) -> list[str]:
    return re.findall(r"\d[\d,]*\.?\d*", text)


def test_readme_block_shows_the_measured_values(results: dict[str, Any]) -> None:
    # Given results.json's content
    # When the README block is rendered
    block = report.render_readme_block(results)

    # Then the required figures appear exactly as results.json has them
    for key, digits in (
        ("llama.handler_tokens_per_s", 1),
        ("llama.bare_tokens_per_s", 1),
        ("llama.cold_start_s", 2),
        ("embeddings.cold_start_s", 2),
        ("embeddings.handler_p50_ms", 1),
        ("embeddings.bare_p50_ms", 1),
        ("embeddings.tokens_per_s", 0),
    ):
        assert report.num(report.lookup(results, key), digits) in block, key
    assert results["machine"]["cpu_model"] in block
    assert "`python -m benchmarks`" in block
    assert block.startswith(report.START_MARKER)
    assert block.endswith(report.END_MARKER)


def test_every_table_row_follows_the_data(results: dict[str, Any]) -> None:
    # Given two results documents from different measurements
    other = _measurements(seed=2)

    # When both are rendered
    first = report.render_readme_block(results).splitlines()
    second = report.render_readme_block(other).splitlines()

    # Then every table row with a number differs: no figure is fixed text
    assert len(first) == len(second)
    rows = [(a, b) for a, b in zip(first, second, strict=True) if a.startswith("| ") and _numbers(a)]
    assert len(rows) >= 10
    for a, b in rows:
        if re.match(r"\| [\d,]+ \| \d+ \|", a):  # projection rows start with the memory size and threads
            assert a.split("|")[3:] != b.split("|")[3:], a
        else:
            assert a.split("|")[2:] != b.split("|")[2:], a


def test_projected_figures_carry_their_assumption(results: dict[str, Any]) -> None:
    # Given the rendered README block, results.md and docs/performance.md
    for text in (
        report.render_readme_block(results),
        report.render_results_md(results),
        report.render_performance_doc(results),
    ):
        lines = text.splitlines()
        # Then every projected cost is marked as projected
        dollar_rows = [line for line in lines if re.match(r"\| [\d,]+ \| \d+ \|", line) and "$" in line]
        assert dollar_rows
        assert all("(projected)" in cell for row in dollar_rows for cell in row.split("|")[3:-1])
        # and the assumption (CPU share, threads, single-thread speeds measured here) stands right above
        first_row = lines.index(dollar_rows[0])
        above = "\n".join(lines[max(0, first_row - 6) : first_row])
        assert "Projection, not a measurement" in above
        assert "1 vCPU of CPU time per 1,769 MB" in above
        assert "threads = floor(memory/1,769)" in above
        single = results["projection"]["single_thread_tokens_per_s"]["generator_output"]
        assert f"{single:,.1f} tokens/s" in above


def test_cost_chart_is_titled_as_a_projection_with_its_assumption(
    results: dict[str, Any], tmp_path: Path
) -> None:
    # When the charts are drawn
    paths = report.charts(results, tmp_path)

    # Then both PNGs exist, and the cost chart's title and footnote say it is a projection and on what
    assert sorted(p.name for p in paths) == sorted([report.LATENCY_CHART, report.COST_CHART])
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    figure = report.cost_chart(results)
    title = figure.axes[0].get_title()
    footnote = " ".join(text.get_text() for text in figure.texts)
    assert title.startswith("Projection, not a measurement")
    assert "1,769 MB" in footnote
    assert "threads" in footnote


def test_readme_block_is_replaced_between_the_markers_only(results: dict[str, Any], tmp_path: Path) -> None:
    # Given a README with text around an old block
    readme = tmp_path / "README.md"
    readme.write_text(
        f"# Title\n\nbefore\n\n{report.START_MARKER}\nold numbers 1.0\n{report.END_MARKER}\n\nafter\n"
    )

    # When the block is updated
    changed = report.update_readme(readme, report.render_readme_block(results))

    # Then only the block changed
    text = readme.read_text()
    assert changed
    assert text.startswith("# Title\n\nbefore\n\n" + report.START_MARKER)
    assert text.endswith(report.END_MARKER + "\n\nafter\n")
    assert "old numbers" not in text
    # and a second run changes nothing
    assert not report.update_readme(readme, report.render_readme_block(results))


def test_readme_without_markers_is_an_error(results: dict[str, Any], tmp_path: Path) -> None:
    # Given a README without the markers
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n")

    # Then updating it says which markers to add, and leaves the file alone
    with pytest.raises(report.ReportError, match="bench:start"):
        report.update_readme(readme, report.render_readme_block(results))
    assert readme.read_text() == "# Title\n"


def test_report_cli_renders_a_results_file(results: dict[str, Any], tmp_path: Path) -> None:
    # Given a results.json somewhere other than benchmarks/
    import json

    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))

    # When the report command renders it
    status = report.main(["--results", str(path)])

    # Then results.md and the charts are written beside it
    assert status == 0
    assert "Benchmark results" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "charts" / report.COST_CHART).is_file()


def test_report_cli_without_results_says_to_run_the_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given no results file
    # Then the command exits 2 and says what to do
    assert report.main(["--results", str(tmp_path / "missing.json")]) == 2
    assert "make bench" in capsys.readouterr().err


def test_lookup_names_the_missing_key(results: dict[str, Any]) -> None:
    broken = copy.deepcopy(results)
    del broken["llama"]["cold_start_s"]
    with pytest.raises(KeyError, match=r"llama\.cold_start_s"):
        report.lookup(broken, "llama.cold_start_s")


def test_busy_machine_is_flagged() -> None:
    # Given a load average of 3 on 2 CPUs before the run
    note = bench.busy_note([3.0, 2.0, 1.0], [3.0, 2.0, 1.0], cpus=2)

    # Then the results carry a warning; a quiet machine gets none
    assert "busy" in note["warning"]
    assert "warning" not in bench.busy_note([0.2, 0.1, 0.1], [0.3, 0.2, 0.1], cpus=2)

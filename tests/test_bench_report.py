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
from benchmarks import (
    batch_bench,
    embeddings_bench,
    llama_bench,
    metrics_bench,
    report,
    snapstart_bench,
    stream_bench,
)
from benchmarks.machine import describe
from benchmarks.memory_settings import memory_settings
from benchmarks.prices import load_prices
from benchmarks.projection import lambda_threads, usd_per_million
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
    _features(llama, embeddings, jitter)
    results: dict[str, Any] = {
        "schema": 1,
        "command": "python -m benchmarks",
        "quick": False,
        "machine": describe(),
        "llama": llama,
        "embeddings": embeddings,
        "batch": batch_bench.summarise(
            {
                "records": 500,
                "tokens": 27_000,
                "batch_s": [jitter(3.4) for _ in range(5)],
                "online_s": [jitter(3.3) for _ in range(5)],
            },
            "org/model",
            "onnx",
            batch_bench.BatchSettings(memory_mb=2048, architecture="x86_64", items_per_batch=500),
            1,
            "us-east-1",
        ),
        "busy": {"load_before": [0.1, 0.2, 0.3], "load_after": [0.4, 0.3, 0.3]},
    }
    results["projection"] = bench.projection(results, "us-east-1")
    return results


def _features(llama: dict[str, Any], embeddings: dict[str, Any], jitter: Any) -> None:
    """This round's measurements, through their own summarizers, added to the two functions' blocks."""

    def streamed(first_ms: float, rate: float, events: int = 128) -> stream_bench.Streamed:
        return stream_bench.Streamed(jitter(first_ms), events, (events - 1) / jitter(rate), events, "{}")

    llama.update(
        stream_bench.summarise(
            {
                "stream": [streamed(80, 130) for _ in range(5)],
                "bare": [streamed(70, 135) for _ in range(5)],
            },
            {
                "json_schema": [streamed(95, 125) for _ in range(5)],
                "free": [streamed(85, 128) for _ in range(5)],
            },
            1,
            1,
        )
    )
    llama.update(
        metrics_bench.summarise_llama(
            {"on": [jitter(130) for _ in range(5)], "off": [jitter(131) for _ in range(5)]}
        )
    )
    embeddings.update(
        metrics_bench.summarise_embeddings(
            {"on": [jitter(40) for _ in range(30)], "off": [jitter(40) for _ in range(30)]}
        )
    )
    for block, init_ms, restore_s, cold_s in ((llama, 880, 0.3, 0.9), (embeddings, 700, 0.12, 0.7)):
        block.update(
            snapstart_bench.summarise(
                "function",
                jitter(init_ms),
                [jitter(restore_s) for _ in range(3)],
                [jitter(cold_s) for _ in range(3)],
                [jitter(150) for _ in range(3)],
                [jitter(650) for _ in range(3)],
                [jitter(0.1) for _ in range(3)],
                None,
            )
        )
    sweep = [
        {
            "threads": t,
            "query_ms": summarize([jitter(9 / t) for _ in range(5)]),
            "batch32_ms": summarize([jitter(500 / t) for _ in range(5)]),
            "batch32_tokens_per_s": jitter(8000 * t),
        }
        for t in (1, 2)
    ]
    embeddings.update(embeddings_bench.sweep_summary(sweep, 1))
    embeddings["memory_settings"] = memory_settings(embeddings, region="us-east-1")


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


# ------------------------------------------------------------------ this round's features


def test_readme_block_shows_streaming_snapstart_structured_output_and_bulk_figures(
    results: dict[str, Any],
) -> None:
    # Given results.json with this round's measurements
    # When the README block is rendered
    block = report.render_readme_block(results)

    # Then each figure appears as results.json has it, beside its comparison
    for key, digits in (
        ("llama.stream_first_byte_ms", 1),
        ("llama.bare_first_token_ms", 1),
        ("llama.stream_tokens_per_s", 1),
        ("llama.restore_to_first_token_s", 3),
        ("llama.cold_first_token_s", 3),
        ("embeddings.restore_to_first_token_s", 3),
        ("llama.json_schema_tokens_per_s", 1),
        ("llama.free_chat_tokens_per_s", 1),
        ("batch.tokens_per_s_per_function", 0),
        ("batch.online_tokens_per_s", 0),
    ):
        assert report.num(report.lookup(results, key), digits) in block, key
    for key in (
        "llama.stream_vs_bare_first_token",
        "llama.restore_vs_cold_first_token",
        "llama.json_schema_vs_free_tokens_per_s",
        "batch.vs_online_tokens_per_s",
        "llama.metrics_off_vs_on_tokens_per_s",
        "embeddings.metrics_off_vs_on_p50",
    ):
        assert report.ratio(report.lookup(results, key)) in block, key
    # and the bulk price is marked as projected, with what it rests on
    price = report.usd(results["batch"]["usd_per_million_tokens_projected"])
    row = next(line for line in block.splitlines() if price in line)
    assert "(projected)" in row
    assert "Step Functions transitions" in block


def test_an_older_results_json_without_this_rounds_keys_still_renders(results: dict[str, Any]) -> None:
    # Given results.json from a run before streaming, SnapStart, metrics, bulk and the memory settings
    old = copy.deepcopy(results)
    del old["batch"]
    for block in (old["llama"], old["embeddings"]):
        for key in [k for k in block if k.startswith(("stream", "json_schema", "free_chat", "metrics"))]:
            del block[key]
        for key in (
            "init_s",
            "restore_to_first_token_s",
            "cold_first_token_s",
            "restore_vs_cold_first_token",
        ):
            del block[key]
    del old["embeddings"]["memory_settings"]

    # When it is rendered
    block = report.render_readme_block(old)
    memory = report.render_memory_block(old)

    # Then the new rows are absent or say they are not in it, and nothing fails
    assert "Function URL" not in block
    assert "not in this results.json" in block
    assert "Bulk embedding" not in block
    assert "Not measured" in memory


def test_snapstart_without_criu_shows_why(results: dict[str, Any]) -> None:
    # Given a run where CRIU could not run
    results["llama"].update(snapstart_bench.unavailable("llama", "CRIU needs root to dump and restore"))

    # Then the row says so instead of a figure, and the keys are null rather than missing
    row = next(line for line in report.features_table(results) if "Generator SnapStart" in line)
    assert "not measured" in row
    assert "CRIU needs root" in row
    assert results["llama"]["restore_to_first_token_s"] is None


def test_memory_settings_take_the_sweep_row_of_each_sizes_threads(results: dict[str, Any]) -> None:
    # Given the embeddings thread sweep measured at 1 and 2 threads on a 2-CPU machine
    em = results["embeddings"]
    sweep = {row["threads"]: row for row in em["thread_sweep"]}

    # When the memory settings are computed
    rows = {row["memory_mb"]: row for row in em["memory_settings"]["rows"]}

    # Then 2,048 MB takes Lambda's 1 thread, 8,192 MB Lambda's 4 capped at this machine's 2
    assert lambda_threads(2048) == rows[2048]["lambda_threads"] == rows[2048]["threads_measured"] == 1
    assert lambda_threads(8192) == rows[8192]["lambda_threads"] == 4
    assert rows[8192]["threads_measured"] == 2
    assert rows[8192]["capped"]
    assert not rows[2048]["capped"]
    for memory, row in rows.items():
        measured = sweep[row["threads_measured"]]
        assert row["query_p50_ms"] == measured["query_ms"]["median"]
        assert row["batch32_p50_ms"] == measured["batch32_ms"]["median"]
        # and each price is the cost model's, at that memory size and the measured speed
        expected = usd_per_million(
            memory, measured["batch32_tokens_per_s"], load_prices(), region="us-east-1", arch="x86_64"
        )
        assert row["usd_per_million_tokens"] == float(expected)
    # and without a sweep there is nothing to show
    assert memory_settings({"thread_sweep": []}, region="us-east-1") is None


def test_memory_block_goes_between_its_markers_in_the_configuration_doc(
    results: dict[str, Any], tmp_path: Path
) -> None:
    # Given a configuration page with the block's markers
    doc = tmp_path / "configuration.md"
    doc.write_text(
        f"## A cheaper embeddings function\n\ntext\n\n{report.MEMORY_START_MARKER}\n"
        f"{report.MEMORY_END_MARKER}\n\n## Next\n"
    )

    # When the report writes it
    assert report.replace_block(
        doc, report.render_memory_block(results), report.MEMORY_START_MARKER, report.MEMORY_END_MARKER, "x"
    )

    # Then the figures stand between the markers, and the rest is untouched
    text = doc.read_text()
    assert text.startswith("## A cheaper embeddings function\n\ntext\n\n" + report.MEMORY_START_MARKER)
    assert text.endswith(report.MEMORY_END_MARKER + "\n\n## Next\n")
    rows = results["embeddings"]["memory_settings"]["rows"]
    for row in rows:
        assert report.usd(row["usd_per_million_tokens"]) in text
        assert report.num(row["batch32_p50_ms"]) in text
    assert "capped: 2 CPUs here" in text
    # and a page without the markers is an error that names them
    bare = tmp_path / "other.md"
    bare.write_text("# Other\n")
    with pytest.raises(report.ReportError, match="embeddings-memory:start"):
        report.replace_block(
            bare,
            report.render_memory_block(results),
            report.MEMORY_START_MARKER,
            report.MEMORY_END_MARKER,
            "x",
        )


def test_the_configuration_doc_has_the_generated_block() -> None:
    # Given docs/configuration.md as committed
    text = report.CONFIGURATION_DOC.read_text()

    # Then its 2,048 MB section holds the block the report writes, once
    assert text.count(report.MEMORY_START_MARKER) == 1
    assert text.count(report.MEMORY_END_MARKER) == 1
    section = text[text.index("## A cheaper embeddings function") :]
    assert section.index(report.MEMORY_START_MARKER) < section.index("## SnapStart")


def test_bulk_price_adds_step_functions_and_s3_to_the_compute() -> None:
    # Given the batch function's speed and cdk.json-like settings
    settings = batch_bench.BatchSettings(memory_mb=2048, architecture="x86_64", items_per_batch=500)

    # When a million tokens are priced as the bulk client estimates a run
    priced, method = batch_bench.projected_usd_per_million(8000.0, 55.0, settings, "us-east-1")

    # Then it costs more than the compute alone (request fees, transitions, S3 requests)
    compute = usd_per_million(2048, 8000.0, load_prices(), region="us-east-1", arch="x86_64")
    assert priced is not None
    assert priced > float(compute)
    assert "Step Functions" in method
    # and a region without Step Functions or S3 prices gives no figure, saying why
    missing, why = batch_bench.projected_usd_per_million(8000.0, 55.0, settings, "eu-central-1")
    assert missing is None
    assert "eu-central-1" in why


def test_a_failed_checkpoint_run_is_recorded_not_fatal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given a machine where CRIU is available but the checkpoint run fails part-way. A real dump
    # cannot be made to fail on demand (and a real run starts two stacks), so the measuring step is
    # replaced by one failing as CRIU reports a failed dump, and the availability check says
    # "available" so that this machine's CRIU does not decide which path runs; only run()'s
    # handling of the failure is under test.
    def broken(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise RuntimeError("criu dump: Dumping FAILED")

    monkeypatch.setattr(snapstart_bench, "unavailable_reason", lambda: None)
    monkeypatch.setattr(snapstart_bench, "_measure", broken)
    said: list[str] = []

    # When the SnapStart measurement runs
    out = snapstart_bench.run(
        "llama", {}, {}, lambda n: {}, repeats=1, log_dir=tmp_path, progress=said.append
    )

    # Then its figures are null, the reason is recorded and said, and nothing is raised
    assert out["restore_to_first_token_s"] is None
    assert out["restore_vs_cold_first_token"] is None
    assert "Dumping FAILED" in out["snapstart_unavailable"]
    assert any("SnapStart not measured" in line for line in said)

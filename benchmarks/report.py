"""Everything published about performance, rendered from benchmarks/results.json.

    python -m benchmarks.report            # results.md, docs/performance.md, charts/*.png
    python -m benchmarks.report --readme   # also the README block between the bench markers

No number in these files is typed by hand: each comes from results.json, and
every projected figure is printed next to the assumption it rests on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results.json"
README = ROOT / "README.md"
PERFORMANCE_DOC = ROOT / "docs" / "performance.md"
CONFIGURATION_DOC = ROOT / "docs" / "configuration.md"
START_MARKER = "<!-- bench:start -->"
END_MARKER = "<!-- bench:end -->"
MEMORY_START_MARKER = "<!-- bench:embeddings-memory:start -->"
MEMORY_END_MARKER = "<!-- bench:embeddings-memory:end -->"
LATENCY_CHART = "embeddings_latency_by_batch.png"
COST_CHART = "cost_per_million_by_memory.png"
PROJECTION_LABEL = "Projection, not a measurement"


class ReportError(RuntimeError):
    """The results or the README cannot be rendered as asked."""


def lookup(results: dict[str, Any], dotted: str) -> Any:
    """``lookup(r, "llama.cold_start_s")`` -> r["llama"]["cold_start_s"]; KeyError names the path."""
    node: Any = results
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"results.json has no {dotted} (missing {part!r})")
        node = node[part]
    return node


def load(path: Path = RESULTS) -> dict[str, Any]:
    if not path.is_file():
        raise ReportError(f"{path} does not exist: run `make bench` first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# ------------------------------------------------------------------ number formatting


def num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def ratio(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.2f}x"


def spread(summary: dict[str, Any] | None, digits: int = 1) -> str:
    """``median (IQR p25-p75)`` or ``median (min-max)`` for few samples."""
    if not summary:
        return "n/a"
    if summary["n"] < 4:
        low, high = num(summary["min"], digits), num(summary["max"], digits)
        return f"{num(summary['median'], digits)} (min {low}, max {high})"
    return (
        f"{num(summary['median'], digits)} (IQR {num(summary['p25'], digits)}-{num(summary['p75'], digits)})"
    )


def usd(value: float) -> str:
    if value >= 1:
        return f"${value:,.2f}"
    return f"${value:#.3g}" if value >= 0.0001 else f"${value:.2e}"


def yes_no(flag: bool | None) -> str:
    return "n/a" if flag is None else ("yes" if flag else "no")


# ------------------------------------------------------------------ sections


def machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    flags = "with AVX-512" if m.get("avx512") else "without AVX-512"
    busy = results.get("busy", {})
    load = busy.get("load_before")
    load_text = f"; load average before {', '.join(str(x) for x in load)}" if load else ""
    warning = f" **{busy['warning']}**" if busy.get("warning") else ""
    return (
        f"{m['cpu_model']} ({m['architecture']}, {flags}), {m['visible_cpus']} visible CPUs, "
        f"{num(m.get('memory_gib'))} GiB, Linux {m['kernel']}, Python {m['python']}; "
        f"run {m['date']}{load_text}.{warning}"
    )


def summary_table(results: dict[str, Any]) -> list[str]:
    lm = results["llama"]
    em = results["embeddings"]
    sp = lm["spread"]
    es = em["spread"]
    rows = [
        "| | through the handler (emulator) | bare library | handler / bare |",
        "| --- | --- | --- | --- |",
        f"| Generator cold start, process start to first token (s) | {spread(sp['cold_start_s'], 2)} "
        f"| {spread(sp['bare_cold_start_s'], 2)} | {ratio(lm['handler_vs_bare_cold_start'])} |",
        f"| Generator warm generation (tokens/s) | {spread(sp['handler_tokens_per_s'])} "
        f"| {spread(sp['bare_tokens_per_s'])} | {ratio(lm['handler_vs_bare_tokens_per_s'])} |",
        f"| Generator prompt processing (tokens/s) | {spread(sp['handler_prompt_tokens_per_s'])} "
        f"| {spread(sp['bare_prompt_tokens_per_s'])} | {ratio(lm['handler_vs_bare_prompt_tokens_per_s'])} |",
        f"| Generator time to first token, short prompt (ms) | {spread(sp['handler_ttft_ms'])} "
        f"| {spread(sp['bare_ttft_ms'])} | {ratio(lm['handler_vs_bare_ttft'])} |",
        f"| Generator time to first token, {num(lm['long_prompt_tokens'], 0)}-token prompt (ms) "
        f"| {spread(sp['handler_long_prompt_ttft_ms'])} | {spread(sp['bare_long_prompt_ttft_ms'])} | |",
        *stream_rows(lm),
        f"| Embeddings cold start, process start to first vector (s) | {spread(es['cold_start_s'], 2)} "
        f"| {spread(es['bare_cold_start_s'], 2)} | {ratio(em['handler_vs_bare_cold_start'])} |",
        f"| Embeddings warm, one {num(em['text_tokens'], 0)}-token text: p50 / p95 (ms) "
        f"| {num(em['handler_p50_ms'])} / {num(em['handler_p95_ms'])} "
        f"| {num(em['bare_p50_ms'])} / {num(em['bare_p95_ms'])} | {ratio(em['handler_vs_bare_p50'])} |",
        f"| Embeddings warm, {em['batch_texts']} texts of {num(em['batch_text_tokens'], 0)} tokens: "
        "p50 / p95 (ms) "
        f"| {num(em['batch_handler_p50_ms'])} / {num(em['batch_handler_p95_ms'])} "
        f"| {num(em['batch_bare_p50_ms'])} / {num(em['batch_bare_p95_ms'])} "
        f"| {ratio(em['batch_handler_vs_bare_p50'])} |",
        f"| Embeddings throughput at the best batch size ({em['best_batch']}) (tokens/s) "
        f"| {num(em['tokens_per_s'], 0)} | {num(em['bare_tokens_per_s'], 0)} "
        f"| {ratio(em['tokens_per_s'] / em['bare_tokens_per_s'])} |",
    ]
    return rows


def stream_rows(lm: dict[str, Any]) -> list[str]:
    """The streamed generator's rows of the summary table (none when results.json predates them)."""
    if "stream_first_byte_ms" not in lm:
        return []
    ss = lm.get("stream_spread", {})
    return [
        "| Generator streamed, request sent to first token event: Function URL (`make local`) / bare "
        f"stream (ms) | {spread(ss.get('stream_first_byte_ms'))} | {spread(ss.get('bare_first_token_ms'))} "
        f"| {ratio(lm['stream_vs_bare_first_token'])} |",
        "| Generator streamed, tokens/s between first and last token event: Function URL / bare stream "
        f"| {spread(ss.get('stream_tokens_per_s'))} | {spread(ss.get('bare_stream_tokens_per_s'))} "
        f"| {ratio(lm['stream_vs_bare_tokens_per_s'])} |",
    ]


def features_table(results: dict[str, Any]) -> list[str]:
    """SnapStart, structured output, metrics and bulk embedding, each against its comparison."""
    lm, em = results["llama"], results["embeddings"]
    batch = results.get("batch") or {}

    def snap(key: str, what: str) -> str:
        block = results[key]
        if "restore_to_first_token_s" not in block:
            return f"| {what} | not in this results.json | | |"
        if block["restore_to_first_token_s"] is None:
            reason = block.get("snapstart_unavailable", "CRIU could not run")
            return f"| {what} | not measured: {reason} | | |"
        parts = block.get("snapstart", {}).get("spread", {})
        return (
            f"| {what} | {spread(parts.get('restore_to_first_token_s'), 3)} "
            f"| {spread(parts.get('cold_first_token_s'), 3)} "
            f"| {ratio(block['restore_vs_cold_first_token'])} |"
        )

    def init(key: str) -> str:
        seconds = results[key].get("init_s")
        return "" if seconds is None else f" (SnapStart init {num(seconds, 2)} s)"

    rows = [
        "| | measured | compared with | ratio |",
        "| --- | --- | --- | --- |",
        snap(
            "llama",
            "Generator SnapStart: restore to first token (s) / cold start to first token, same runner"
            + init("llama"),
        ),
        snap(
            "embeddings",
            "Embeddings SnapStart: restore to first vector (s) / cold start to first vector, same runner"
            + init("embeddings"),
        ),
    ]
    if "json_schema_tokens_per_s" in lm:
        ss = lm.get("stream_spread", {})
        rows.append(
            "| Generator chat, tokens/s: response_format json_schema / free text "
            f"| {spread(ss.get('json_schema_tokens_per_s'))} | {spread(ss.get('free_chat_tokens_per_s'))} "
            f"| {ratio(lm['json_schema_vs_free_tokens_per_s'])} |"
        )
    if "metrics_off_vs_on_tokens_per_s" in lm:
        ms = lm.get("metrics_spread", {})
        rows.append(
            "| Generator tokens/s: metrics off / metrics on "
            f"| {spread(ms.get('off_tokens_per_s'))} | {spread(ms.get('on_tokens_per_s'))} "
            f"| {ratio(lm['metrics_off_vs_on_tokens_per_s'])} |"
        )
    if "metrics_off_vs_on_p50" in em:
        ms = em.get("metrics_spread", {})
        rows.append(
            f"| Embeddings one {num(em['text_tokens'], 0)}-token text, p50 (ms): metrics off / metrics on "
            f"| {spread(ms.get('off_ms'))} | {spread(ms.get('on_ms'))} "
            f"| {ratio(em['metrics_off_vs_on_p50'])} |"
        )
    if "tokens_per_s_per_function" in batch:
        bs = batch.get("spread", {})
        rows.append(
            f"| Bulk embedding, tokens/s per function: batch function ({num(batch['records'], 0)} records, "
            "S3 on moto) / online handler, same texts "
            f"| {spread(bs.get('tokens_per_s_per_function'), 0)} "
            f"| {spread(bs.get('online_tokens_per_s'), 0)} "
            f"| {ratio(batch['vs_online_tokens_per_s'])} |"
        )
        projected = batch.get("usd_per_million_tokens_projected")
        rows.append(
            f"| Bulk embedding, USD per million tokens at {num(batch['memory_mb'], 0)} MB, Step Functions "
            "and S3 included (projected) "
            f"| {'n/a' if projected is None else usd(projected) + ' (projected)'} | | |"
        )
    return rows


def features_notes(results: dict[str, Any]) -> list[str]:
    """What the features table's figures rest on: the bulk projection's assumption, the first tokens."""
    lm = results["llama"]
    batch = results.get("batch") or {}
    notes = []
    if "json_schema_first_token_ms" in lm:
        notes.append(
            f"Structured output's first token: {num(lm['json_schema_first_token_ms'])} ms with the schema, "
            f"{num(lm['free_chat_first_token_ms'])} ms without (the grammar is built before the first "
            "token); "
            f"{num(lm['json_schema_tokens'], 0)} and {num(lm['free_chat_tokens'], 0)} tokens per answer."
        )
    if batch.get("cost_method"):
        notes.append(f"Bulk embedding cost ({PROJECTION_LABEL.lower()}): {batch['cost_method']}")
    return notes


def models_line(results: dict[str, Any]) -> str:
    lm = results["llama"]
    em = results["embeddings"]
    return (
        f"Generator: `{lm['model']}` at {lm['memory_mb']:,} MB, {lm['threads']} thread(s) "
        f"(greedy, {lm['settings']['n_generate']} generated tokens, n_ctx {lm['settings']['n_ctx']}). "
        f"Embeddings: `{em['model']}` ({em['backend']} backend) at {em['memory_mb']:,} MB, "
        f"{em['threads']} thread(s)."
    )


def threads_line(results: dict[str, Any]) -> str:
    lm = results["llama"]
    if "thread_sweep" not in lm:
        return "Thread sweep: not run."
    speeds = ", ".join(
        f"{row['threads']}: {num(row['tokens_per_s']['median'])} tokens/s" for row in lm["thread_sweep"]
    )
    return (
        f"Generator thread sweep (bare library, generation): {speeds}. Best here: {lm['best_threads']} "
        f"thread(s); the handler's default here ({lm['threads']}) reaches "
        f"{num(100 * lm['default_threads_vs_best'], 0)}% of the best "
        f"(within 10%: {yes_no(lm['default_threads_within_10pct'])})."
    )


def embeddings_threads_line(results: dict[str, Any]) -> str:
    em = results["embeddings"]
    sweep = em.get("thread_sweep")
    if not sweep:
        return "Embeddings thread sweep: not run."
    rows = "; ".join(
        f"{row['threads']}: {num(row['query_ms']['median'])} ms a {em['sweep_query_tokens']}-token query, "
        f"{num(row['batch32_ms']['median'])} ms 32 texts ({num(row['batch32_tokens_per_s'], 0)} tokens/s)"
        for row in sweep
    )
    return (
        f"Embeddings thread sweep (bare ONNX Runtime, intra-op threads): {rows}. Best for the batch here: "
        f"{em['best_threads_batch32']} thread(s); the handler's default here ({em['threads']}) reaches "
        f"{num(100 * em['default_threads_vs_best_batch32'], 0)}% of it."
    )


def projection_table(results: dict[str, Any], memory_sizes: Sequence[int] | None = None) -> list[str]:
    proj = results["projection"]
    series = proj["series"]
    wanted = set(memory_sizes) if memory_sizes else None
    head = "| memory (MB) | threads | " + " | ".join(f"{s['label']} ($/M tokens)" for s in series) + " |"
    rows = [
        f"**{proj['assumption']}** {proj['visible_cpus_assumption']}. "
        f"Prices: {proj['architecture']} in {proj['region']}, checked {proj['prices_checked']}.",
        "",
        head,
        "| --- | --- | " + " | ".join("---" for _ in series) + " |",
    ]
    for row in proj["rows"]:
        if wanted is not None and row["memory_mb"] not in wanted:
            continue
        cells = " | ".join(f"{usd(row[s['key'] + '_usd_per_million'])} (projected)" for s in series)
        rows.append(f"| {row['memory_mb']:,} | {row['threads']} | {cells} |")
    managed = ", ".join(f"{m['name']} ${m['usd_per_million']}" for m in proj.get("managed", []))
    if managed:
        rows += ["", f"For comparison, managed services per million tokens: {managed}."]
    return rows


def batch_table(results: dict[str, Any]) -> list[str]:
    em = results["embeddings"]
    rows = [
        f"Texts of {num(em['batch_text_tokens'], 0)} tokens each; medians over {em['repeats']} runs, "
        "spread as IQR (or min-max under 4 runs).",
        "",
        "| batch | handler latency (ms) | bare latency (ms) | handler tokens/s | bare tokens/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in em["by_batch"]:
        rows.append(
            f"| {row['batch']} | {spread(row['handler_ms'])} | {spread(row['bare_ms'])} "
            f"| {num(row['handler_tokens_per_s'], 0)} | {num(row['bare_tokens_per_s'], 0)} |"
        )
    return rows


def cold_parts(results: dict[str, Any]) -> list[str]:
    lm = results["llama"]["cold_start_parts"]
    em = results["embeddings"]["cold_start_parts"]
    rows = [
        "| part (median) | generator | embeddings |",
        "| --- | --- | --- |",
        f"| emulator ready (s) | {num(lm['emulator_ready_s'], 2)} | {num(em['emulator_ready_s'], 2)} |",
        f"| init phase, as the emulator reports it (ms) | {num(lm['rie_init_ms'], 0)} "
        f"| {num(em['rie_init_ms'], 0)} |",
        f"| init measured by the handler: imports + model load (ms) | {num(lm['handler_init_ms'], 0)} "
        f"| {num(em['handler_init_ms'], 0)} |",
        f"| first request after init, as the handler times it (ms) | {num(lm['first_token_ms'], 0)} "
        f"| {num(em['first_request_ms'], 0)} |",
        f"| whole first invoke (s) | {num(lm['first_invoke_s'], 2)} | {num(em['first_invoke_s'], 2)} |",
    ]
    for name, value in sorted(em.get("handler_parts_ms", {}).items()):
        rows.append(f"| embeddings init part: {name} (ms) | | {num(value, 0)} |")
    return rows


def command_line(results: dict[str, Any]) -> str:
    return f"`{results['command']}`" + (
        " (quick mode: few repeats, for tests)" if results.get("quick") else ""
    )


def _paragraphs(lines: list[str]) -> list[str]:
    """Each line as a paragraph of its own (followed by a blank line)."""
    return [part for line in lines for part in (line, "")]


def render_results_md(results: dict[str, Any]) -> str:
    out = [
        "# Benchmark results",
        "",
        f"Generated by `python -m benchmarks.report` from `benchmarks/results.json`; measured with "
        f"{command_line(results)}.",
        "",
        f"Machine: {machine_line(results)}",
        "",
        models_line(results),
        "",
        "## Measured here",
        "",
        *summary_table(results),
        "",
        threads_line(results),
        "",
        embeddings_threads_line(results),
        "",
        "## This round's features, each against its comparison",
        "",
        *features_table(results),
        "",
        *_paragraphs(features_notes(results)),
        "## Cold start, in parts",
        "",
        *cold_parts(results),
        "",
        "## Embeddings by batch size",
        "",
        *batch_table(results),
        "",
        "## Projected to Lambda",
        "",
        *projection_table(results),
        "",
        "## Machine",
        "",
        "```json",
        json.dumps(results["machine"], indent=2),
        "```",
        "",
    ]
    return "\n".join(out)


METHOD = """\
## How it is measured

`make bench` (`python -m benchmarks`) runs both functions the way Lambda runs
them, through the real handlers under the Lambda Runtime Interface Emulator
(`local/rie.py`: the real `awslambdaric` runtime client behind the real
emulator), and runs the same work with the bare libraries in the same process
run: llama-cpp-python's `Llama` built with the handler's settings, and the
embedding model's bare pipeline. Handler and bare runs alternate, and the side
that goes first alternates too, so drift on a shared machine hits both alike.

- **Cold start** is process start to first result: a fresh emulator is started
  and invoked once (the emulator starts the runtime on the first invoke, which
  pays the init phase as on Lambda); the bare side spawns a fresh Python that
  imports the library, loads the model and computes one result. The operating
  system's file cache is warm, unlike a first start on a Lambda host, which
  pulls the image lazily.
- **Generator speeds** come from wall-clock differences of requests that differ
  in one thing: a short prompt with one generated token (time to first token),
  a long prompt with one token (prompt processing = extra prompt tokens / extra
  time) and a short prompt with many tokens (generation = extra tokens / extra
  time). Every prompt opens with a new number so no prompt is reused from the
  KV cache.
- **Thread sweep**: generation and prompt speed of the bare library at every
  thread count from 1 to the visible CPUs, in rotating order.
- **Embeddings**: warm latency of one long text (the model's limit if it is
  below 512 tokens) and of a batch of 32 texts; throughput in tokens per second
  at batch sizes 1 to 64.
- **Projection to Lambda**: single-thread speeds measured here, scaled by the
  CPU share Lambda grants at each memory size and priced with the cost model
  (`docs/cost.md`). Labelled as a projection wherever it appears.

Each of this round's features is measured against its comparison in the same
run, alternating (results.json names each method in a `*_method` key):

- **Streaming** (`benchmarks/stream_bench.py`): the generator alone under
  `make local`'s runner (`local.stack.LocalStack`: the project's runtime loop on
  the Runtime API stand-in, which passes a streamed answer on piece by piece),
  its Function URL in invoke mode `RESPONSE_STREAM`. A streamed
  `POST /v1/completions` is sent with Python's `http.client` and its chunked
  answer read line by line as it arrives: `llama.stream_first_byte_ms` is from
  sending the request to the first server-sent event that carries a token,
  `llama.stream_tokens_per_s` the token events after the first over the time
  from the first to the last. llama-cpp-python's `Llama` streams the same
  prompt with the same settings and threads in the bench process, timed the
  same way (`llama.bare_first_token_ms`, `llama.bare_stream_tokens_per_s`);
  ratios `llama.stream_vs_bare_first_token` and `llama.stream_vs_bare_tokens_per_s`.
  HTTP on localhost: Lambda's network is not in it.
- **Structured output**: streamed chat completions through the same URL, with
  `response_format` holding a small JSON schema (`llama.json_schema` in
  results.json) and without, same messages and `max_tokens`:
  `llama.json_schema_tokens_per_s` against `llama.free_chat_tokens_per_s`, ratio
  `llama.json_schema_vs_free_tokens_per_s`. The schema's open `story` string lets
  the answer run on like free text; building the grammar falls in the first
  token's time (`llama.json_schema_first_token_ms`), not in the speed.
- **SnapStart** (`benchmarks/snapstart_bench.py`): each function twice under
  `make local`'s runner, with SnapStart and a real checkpoint (CRIU 4.1.1 built
  by `scripts/build-criu.sh`, root needed: `local.snapstart.CriuSnapshots`, as
  `python -m local --snap-start KEY --checkpoint` runs it) and on demand. Each
  round ends both current environments (SIGKILL, as Lambda ends an idle one)
  and times one invoke on each by the bench's wall clock, from sending it to
  its answer (one generated token, or one vector):
  `<function>.restore_to_first_token_s` against `<function>.cold_first_token_s`,
  ratio `<function>.restore_vs_cold_first_token`. `<function>.init_s` is the
  SnapStart init (INIT_REPORT); the checkpoint's size and times are under
  `<function>.snapstart`. A restored process's monotonic clock goes on from the
  checkpoint, so no time is read inside it. Without CRIU the figures are null
  and `<function>.snapstart_unavailable` says why. This is a process checkpoint
  with the model's pages in the page cache, not Lambda's microVM snapshot,
  whose restores also fetch the snapshot's pages.
- **Metrics overhead** (`benchmarks/metrics_bench.py`): two copies of each
  handler under the emulator, one with `POWERTOOLS_METRICS_DISABLED=true` (what
  the stack sets for `metrics_enabled: false`): generation speed
  (`llama.metrics_off_vs_on_tokens_per_s`) and one text's p50 latency
  (`embeddings.metrics_off_vs_on_p50`), off over on.
- **Bulk embedding** (`benchmarks/batch_bench.py`): in a worker process, the
  batch function's entry point (`lambda_images/embeddings/batch.py`) with S3 as
  moto's local server (AWS itself cannot run here), invoked with one batch of
  cdk.json's `batch_embeddings_items_per_batch` JSON Lines records as the
  Distributed Map passes it, writing its Parquet file to the moto bucket; the
  online `handler.py` in the same process embeds the same texts (direct invokes
  of 64). `batch.tokens_per_s_per_function` is the batch's tokens over the
  handler's wall time, S3 writes included, `batch.vs_online_tokens_per_s` its
  ratio to the online handler. `batch.usd_per_million_tokens_projected` prices a
  million tokens of such records with the bulk client's estimate
  (`client.embed_s3.project`, the batch function at cdk.json's
  `batch_embeddings_memory_mb`) plus the client's count of Step Functions
  transitions and S3 requests per batch, at `benchmarks/prices.json`'s prices:
  a projection from this machine's speed.
- **The 2,048 MB embeddings setting**: `embeddings.memory_settings` takes the
  embeddings thread sweep's rows at the thread count each memory size gets on
  Lambda (1 at 2,048 MB, 4 at 8,192 MB), capped by the bench machine's CPUs,
  and prices each with the cost model; `docs/configuration.md` shows them.

Every figure is a median over repeats with its spread; the raw values are in
`benchmarks/results.json`.

## Running it

```
make bench                                      # the embedded models, as cdk.json deploys them
make bench BENCH_ARGS="--quick"                 # a short check that everything works (not for publishing)
make bench BENCH_ARGS="--llama-model path/to/model.gguf --embeddings-model path/to/st-folder \\
  --embeddings-model-id org/name"               # your own models
python -m benchmarks.report --readme            # re-render these pages and README's block from results.json
```

Other flags: `--only llama|embeddings`, `--llama-memory-mb`, `--embeddings-memory-mb`
(the memory the handler sizes its threads from), `--embeddings-backend onnx|torch`,
`--repeats`, `--region` (prices for the projection), `--out` (write elsewhere).
Run it on a quiet machine: a one-minute load average above half the CPU count
before the run marks the results as taken on a busy machine. The SnapStart
figures need root and CRIU (`bash scripts/build-criu.sh`); without them the run
goes on and records why they are missing. On a quiet 2-CPU machine a full run
takes about four minutes, `--quick` under one.
"""


def render_performance_doc(results: dict[str, Any]) -> str:
    body = render_results_md(results).split("\n", 2)[2]
    return "\n".join(
        [
            "# Performance",
            "",
            "<!-- generated by `python -m benchmarks.report` from benchmarks/results.json; do not edit -->",
            "",
            METHOD,
            body,
            "",
            f"![Embeddings latency by batch size](../benchmarks/charts/{LATENCY_CHART})",
            "",
            f"![{PROJECTION_LABEL}: cost per million tokens by memory size]"
            f"(../benchmarks/charts/{COST_CHART})",
            "",
        ]
    )


def render_readme_block(results: dict[str, Any]) -> str:
    proj = results["projection"]
    default_sizes = [results["llama"]["memory_mb"], results["embeddings"]["memory_mb"], 1769, 3538, 10240]
    lines = [
        START_MARKER,
        "<!-- generated by `python -m benchmarks.report --readme` from benchmarks/results.json; "
        "do not edit -->",
        "",
        f"Measured with {command_line(results)} on {machine_line(results)}",
        "",
        models_line(results),
        "",
        *summary_table(results),
        "",
        threads_line(results),
        "",
        embeddings_threads_line(results),
        "",
        *features_table(results),
        "",
        *_paragraphs(features_notes(results)),
        f"![Embeddings latency by batch size](benchmarks/charts/{LATENCY_CHART})",
        "",
        *projection_table(results, sorted(set(default_sizes) & {r["memory_mb"] for r in proj["rows"]})),
        "",
        f"![{PROJECTION_LABEL}: cost per million tokens by memory size](benchmarks/charts/{COST_CHART})",
        "",
        "Method, every table and the raw numbers: [docs/performance.md](docs/performance.md), "
        "[benchmarks/results.json](benchmarks/results.json).",
        END_MARKER,
    ]
    return "\n".join(lines)


def update_readme(readme: Path, block: str) -> bool:
    """Replace the text between the bench markers; True if the file changed."""
    return replace_block(readme, block, START_MARKER, END_MARKER, "the performance section")


def replace_block(path: Path, block: str, start_marker: str, end_marker: str, where: str) -> bool:
    """Replace ``start_marker`` ... ``end_marker`` (both included) by ``block``; True if the file changed."""
    if not path.is_file():
        raise ReportError(f"{path} does not exist")
    text = path.read_text()
    start = text.find(start_marker)
    end = text.find(end_marker)
    if start < 0 or end < 0 or end < start:
        raise ReportError(
            f"{path} has no `{start_marker}` ... `{end_marker}` block: add both markers where {where} "
            "belongs, then run this again"
        )
    updated = text[:start] + block + text[end + len(end_marker) :]
    if updated == text:
        return False
    path.write_text(updated)
    return True


def render_memory_block(results: dict[str, Any]) -> str:
    """docs/configuration.md's figures for 2,048 MB against 8,192 MB (the embeddings function)."""
    lines = [
        MEMORY_START_MARKER,
        "<!-- generated by `python -m benchmarks.report` from benchmarks/results.json; do not edit -->",
        "",
    ]
    em = results.get("embeddings", {})
    settings = em.get("memory_settings")
    if not settings:
        lines += [
            "Not measured in the `benchmarks/results.json` this page was generated from (it predates the "
            "embeddings thread sweep): `make bench` measures it and fills this in.",
            "",
            MEMORY_END_MARKER,
        ]
        return "\n".join(lines)
    machine = results["machine"]
    cpus = settings["visible_cpus"]
    lines += [
        f"Measured with {command_line(results)} on {machine['cpu_model']} ({cpus} CPUs), "
        f"{machine['date'][:10]}, with `{em['model']}`, the model the bench ran (a deployed model with more "
        "layers takes longer and costs more, in proportion): the bare ONNX Runtime pipeline at the thread "
        f"count each memory size gets on Lambda, capped by this machine's {cpus} CPUs.",
        "",
        "| memory | CPU share | threads on Lambda | threads measured "
        f"| {settings['query_tokens']}-token query, p50 (ms) "
        f"| 32 texts of {settings['batch_text_tokens']} tokens, p50 (ms) "
        "| tokens/s (32 texts) | USD per million tokens |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in settings["rows"]:
        capped = f" (capped: {cpus} CPUs here)" if row["capped"] else ""
        lines.append(
            f"| {row['memory_mb']:,} MB | {num(row['cpu_share'], 2)} vCPU | {row['lambda_threads']} "
            f"| {row['threads_measured']}{capped} | {num(row['query_p50_ms'])} "
            f"| {num(row['batch32_p50_ms'])} "
            f"| {num(row['batch32_tokens_per_s'], 0)} | {usd(row['usd_per_million_tokens'])} |"
        )
    lines += [
        "",
        "USD per million tokens: the cost model's compute price of that memory size "
        f"({settings['architecture']}, {settings['region']}, prices checked {settings['prices_checked']}) "
        "for the time the 32-text batch took here; request fees left out. A capped row ran fewer threads "
        "than Lambda would give it, so on Lambda its times would be shorter than shown. Method: "
        "[docs/performance.md](performance.md).",
        "",
        MEMORY_END_MARKER,
    ]
    return "\n".join(lines)


# ------------------------------------------------------------------ charts


def _pyplot() -> Any:
    os.environ.setdefault("MPLCONFIGDIR", "/tmp/matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_chart(results: dict[str, Any]) -> Any:
    """Embeddings latency against batch size, handler and bare (a matplotlib Figure)."""
    plt = _pyplot()
    from matplotlib import ticker

    em = results["embeddings"]
    batches = [row["batch"] for row in em["by_batch"]]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    for side, style in (("handler", "o-"), ("bare", "s--")):
        medians = [row[f"{side}_ms"]["median"] for row in em["by_batch"]]
        low = [row[f"{side}_ms"]["median"] - row[f"{side}_ms"]["p25"] for row in em["by_batch"]]
        high = [row[f"{side}_ms"]["p75"] - row[f"{side}_ms"]["median"] for row in em["by_batch"]]
        label = "through the handler (emulator)" if side == "handler" else "bare library"
        ax.errorbar(batches, medians, yerr=[low, high], fmt=style, capsize=3, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel(f"texts per request ({num(em['batch_text_tokens'], 0)} tokens each)")
    ax.set_ylabel("latency, median and IQR (ms)")
    ax.set_title(
        f"Embeddings latency by batch size (measured)\n"
        f"{em['model']}, {em['backend']}, {em['threads']} thread(s)",
        fontsize=10,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    machine = results["machine"]
    fig.text(0.01, 0.01, f"Measured on {machine['cpu_model']}, {machine['date'][:10]}", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def cost_chart(results: dict[str, Any]) -> Any:
    """Projected cost per million tokens against memory size, with its assumption (a Figure)."""
    plt = _pyplot()
    from matplotlib import ticker

    proj = results["projection"]
    memory = [row["memory_mb"] for row in proj["rows"]]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for s in proj["series"]:
        ax.plot(memory, [row[s["key"] + "_usd_per_million"] for row in proj["rows"]], "o-", label=s["label"])
    by_price: dict[str, list[str]] = {}
    for m in proj.get("managed", []):
        by_price.setdefault(m["usd_per_million"], []).append(m["name"])
    for price, names in by_price.items():
        ax.axhline(float(price), linestyle=":", color="grey")
        ax.annotate(
            f"{' / '.join(names)}: ${price}",
            (memory[-1], float(price)),
            fontsize=7,
            color="dimgrey",
            ha="right",
            va="bottom",
        )
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"${v:g}"))
    ax.set_xlabel("Lambda memory size (MB)")
    ax.set_ylabel("USD per million tokens (compute)")
    ax.set_title(f"{PROJECTION_LABEL}: cost per million tokens by memory size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, _wrap(proj["assumption"], 150), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def charts(results: dict[str, Any], out_dir: Path) -> list[Path]:
    """Both charts as PNG files in ``out_dir``."""
    plt = _pyplot()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in ((LATENCY_CHART, latency_chart), (COST_CHART, cost_chart)):
        figure = draw(results)
        path = out_dir / name
        figure.savefig(path)
        plt.close(figure)
        written.append(path)
    return written


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# ------------------------------------------------------------------ command line


def write_all(
    results: dict[str, Any],
    out_dir: Path,
    *,
    performance_doc: Path | None,
    readme: Path | None,
    configuration_doc: Path | None = None,
) -> list[Path]:
    """results.md and charts in ``out_dir``; docs/performance.md, the README block and
    docs/configuration.md's embeddings-memory block if asked."""
    written = [out_dir / "results.md"]
    written[0].write_text(render_results_md(results))
    written += charts(results, out_dir / "charts")
    if performance_doc is not None:
        performance_doc.parent.mkdir(parents=True, exist_ok=True)
        performance_doc.write_text(render_performance_doc(results))
        written.append(performance_doc)
    if configuration_doc is not None and replace_block(
        configuration_doc,
        render_memory_block(results),
        MEMORY_START_MARKER,
        MEMORY_END_MARKER,
        "the figures of the 2,048 MB embeddings setting",
    ):
        written.append(configuration_doc)
    if readme is not None and update_readme(readme, render_readme_block(results)):
        written.append(readme)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="results.json to render")
    parser.add_argument(
        "--readme", action="store_true", help=f"also rewrite the block between {START_MARKER} markers"
    )
    parser.add_argument("--readme-path", type=Path, default=README, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        results = load(args.results)
        out_dir = args.results.parent
        publish = args.results.resolve() == RESULTS
        written = write_all(
            results,
            out_dir,
            performance_doc=PERFORMANCE_DOC if publish else None,
            readme=args.readme_path if args.readme else None,
            configuration_doc=CONFIGURATION_DOC if publish else None,
        )
    except (ReportError, KeyError) as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedding function measured two ways in one run: the real handler under the
Runtime Interface Emulator (direct invokes with TEI's ``{"inputs": [...]}``), and
the bare libraries (``benchmarks.bare_embeddings``) with the same threads.
Handler and bare requests alternate, and so does which goes first.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.bare_embeddings import BareOnnx, BareTorch, load
from benchmarks.llama_bench import emulated
from benchmarks.stats import median_or_none, summarize
from lambda_common.cpu import default_threads, visible_cpus
from local.rie import IMAGES, EmulatedFunction, FunctionSpec

EMBEDDINGS_DIR = IMAGES / "embeddings"
Progress = Callable[[str], None]
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)
WORDS = [
    "mountain",
    "villages",
    "keep",
    "old",
    "recipes",
    "for",
    "bread",
    "cheese",
    "and",
    "smoked",
    "fish",
    "while",
    "new",
    "roads",
    "bring",
    "visitors",
    "who",
    "ask",
    "about",
    "trails",
    "weather",
    "festivals",
    "and",
    "the",
    "history",
    "of",
    "the",
    "valley",
]


@dataclass(frozen=True)
class EmbeddingsBenchConfig:
    model_dir: Path
    """The folder the handler loads: the ONNX export (onnx) or the sentence-transformers folder (torch)."""
    model_id: str
    backend: str
    memory_mb: int
    source_dir: Path | None = None
    """The sentence-transformers folder the ONNX export was made from (`make local` takes that one)."""
    repeats: int = 30
    batch_repeats: int = 5
    cold_repeats: int = 3
    single_tokens: int = 512
    batch_text_tokens: int = 128
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    threads: int | None = None
    """N_THREADS as cdk.json configures it; None: the handler's CPU-share default."""
    sweep: bool = True
    """Also measure the bare pipeline at 1..visible CPUs threads (a short query and a 32-text batch)."""
    log_dir: Path = field(default_factory=lambda: Path(".cache/bench"))

    @property
    def handler_threads(self) -> int:
        """The handler's thread count: ``threads``, else its CPU-share default on this machine's CPUs."""
        return self.threads or default_threads(self.memory_mb, visible_cpus())


class TextMaker:
    """Texts of an exact token count (special tokens included), different from each other."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self._count = count
        self._serial = 0

    def make(self, tokens: int) -> str:
        self._serial += 1
        words = [f"entry{self._serial}"]
        i = self._serial
        while self._count(" ".join([*words, WORDS[i % len(WORDS)]])) <= tokens:
            words.append(WORDS[i % len(WORDS)])
            i += 1
        return " ".join(words)


def function_spec(cfg: EmbeddingsBenchConfig) -> FunctionSpec:
    return FunctionSpec(
        name="bench-embeddings",
        code_dir=EMBEDDINGS_DIR,
        memory_mb=cfg.memory_mb,
        timeout_s=900,
        environment={
            "MODEL_DIR": str(cfg.model_dir),
            "MODEL_ID": cfg.model_id,
            "BACKEND": cfg.backend,
            "POWERTOOLS_SERVICE_NAME": "embeddings",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "ORT_DISABLE_TELEMETRY": "1",
            **({"N_THREADS": str(cfg.threads)} if cfg.threads is not None else {}),
        },
    )


def handler_embed(function: EmulatedFunction, texts: Sequence[str]) -> float:
    """Wall milliseconds of one direct invoke; refuses anything but a list of vectors."""
    started = time.perf_counter()
    result = function.invoke({"inputs": list(texts)}, timeout_s=600)
    elapsed = (time.perf_counter() - started) * 1000
    body = result.json()
    if result.status != 200 or not isinstance(body, list) or len(body) != len(texts):
        raise RuntimeError(
            f"the embeddings handler refused the benchmark request: {result.status} {str(body)[:500]}"
        )
    return elapsed


def bare_embed(model: BareOnnx | BareTorch, texts: Sequence[str]) -> float:
    started = time.perf_counter()
    vectors = model.embed(texts)
    elapsed = (time.perf_counter() - started) * 1000
    if len(vectors) != len(texts):
        raise RuntimeError("the bare pipeline returned the wrong number of vectors")
    return elapsed


def bare_cold_start(cfg: EmbeddingsBenchConfig, threads: int) -> float:
    """Seconds from spawning a Python process to its first vector, bare libraries."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "benchmarks.bare_embeddings",
            str(cfg.model_dir),
            "--backend",
            cfg.backend,
            "--threads",
            str(threads),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    seconds = time.perf_counter() - started
    _, err = process.communicate(timeout=300)
    if process.returncode != 0 or not line:
        raise RuntimeError(f"bare embeddings cold-start probe failed ({process.returncode}): {err[-2000:]}")
    return seconds


def handler_cold_start(cfg: EmbeddingsBenchConfig, index: int) -> dict[str, Any]:
    log = cfg.log_dir / f"embeddings-cold-{index}.log"
    started = time.perf_counter()
    with emulated(function_spec(cfg), log) as function:
        ready = time.perf_counter()
        first_ms = handler_embed(function, ["hello world"])
        done = time.perf_counter()
        second_ms = handler_embed(function, ["hello world"])
    text = log.read_text(errors="replace")
    init = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", text)
    loaded = _model_loaded(text)
    first = _logged(text, "embedded")
    rie_init_ms = float(init.group(1)) if init else None
    load_ms = float(loaded["load_ms"]) if "load_ms" in loaded else None
    return {
        "cold_start_s": done - started,
        "emulator_ready_s": ready - started,
        "first_invoke_s": first_ms / 1000,
        "rie_init_ms": rie_init_ms,
        "handler_init_ms": load_ms,
        "first_request_ms": float(first["total_ms"]) if "total_ms" in first else None,
        "warm_request_ms": second_ms,
        "imports_ms": rie_init_ms - load_ms if rie_init_ms is not None and load_ms is not None else None,
        "threads": loaded.get("threads"),
    }


def _model_loaded(log_text: str) -> dict[str, Any]:
    return _logged(log_text, "model loaded")


def _logged(log_text: str, message: str) -> dict[str, Any]:
    """The first structured log record with this message."""
    for line in log_text.splitlines():
        if f'"{message}"' in line and "{" in line:
            try:
                record: dict[str, Any] = json.loads(line[line.index("{") :])
                return record
            except ValueError:
                continue
    return {}


def run(cfg: EmbeddingsBenchConfig, progress: Progress) -> dict[str, Any]:
    cpus = visible_cpus()
    threads = cfg.handler_threads
    progress(
        f"embeddings: {cfg.model_id} ({cfg.backend}), handler at {cfg.memory_mb} MB -> {threads} thread(s) "
        f"on {cpus} CPU(s)"
    )
    bare = load(cfg.backend, cfg.model_dir, threads)
    texts = TextMaker(bare.count_tokens)
    single_tokens = min(cfg.single_tokens, bare.max_seq_length)
    batch_tokens = min(cfg.batch_text_tokens, bare.max_seq_length)

    cold: list[dict[str, Any]] = []
    bare_cold: list[float] = []
    for i in range(cfg.cold_repeats):
        for side in ("handler", "bare") if i % 2 == 0 else ("bare", "handler"):
            if side == "handler":
                cold.append(handler_cold_start(cfg, i))
                seconds = cold[-1]["cold_start_s"]
                progress(f"embeddings: cold start {i + 1}/{cfg.cold_repeats} handler {seconds:.2f} s")
            else:
                bare_cold.append(bare_cold_start(cfg, threads))
                progress(f"embeddings: cold start {i + 1}/{cfg.cold_repeats} bare {bare_cold[-1]:.2f} s")

    single: dict[str, list[float]] = {"handler": [], "bare": []}
    batch32: dict[str, list[float]] = {"handler": [], "bare": []}
    by_batch: dict[int, dict[str, list[float]]] = {b: {"handler": [], "bare": []} for b in cfg.batch_sizes}
    with emulated(function_spec(cfg), cfg.log_dir / "embeddings-warm.log") as function:
        handler_embed(function, ["warm up"])
        bare_embed(bare, ["warm up"])

        def both(batch: Sequence[str], into: dict[str, list[float]], i: int) -> None:
            for side in ("handler", "bare") if i % 2 == 0 else ("bare", "handler"):
                into[side].append(
                    handler_embed(function, batch) if side == "handler" else bare_embed(bare, batch)
                )

        one = [texts.make(single_tokens)]
        many = [texts.make(batch_tokens) for _ in range(32)]
        for i in range(cfg.repeats):
            both(one, single, i)
            both(many, batch32, i)
            if (i + 1) % max(1, cfg.repeats // 3) == 0 or i + 1 == cfg.repeats:
                progress(
                    f"embeddings: warm {i + 1}/{cfg.repeats}: "
                    f"one text handler {single['handler'][-1]:.1f} ms, "
                    f"bare {single['bare'][-1]:.1f} ms; 32 texts handler {batch32['handler'][-1]:.1f} ms, "
                    f"bare {batch32['bare'][-1]:.1f} ms"
                )
        pool = [texts.make(batch_tokens) for _ in range(max(cfg.batch_sizes))]
        for i in range(cfg.batch_repeats):
            order = list(cfg.batch_sizes) if i % 2 == 0 else list(reversed(cfg.batch_sizes))
            for b in order:
                both(pool[:b], by_batch[b], i)
            progress(f"embeddings: batch sweep {i + 1}/{cfg.batch_repeats} done")
        logged = _model_loaded((cfg.log_dir / "embeddings-warm.log").read_text(errors="replace"))

    single_thread = _single_thread_throughput(cfg, threads, bare, pool, by_batch, batch_tokens)
    sweep = thread_sweep(cfg, cpus, texts, batch_tokens, progress) if cfg.sweep else []
    out = _summarise(
        cfg,
        threads,
        cpus,
        cold,
        bare_cold,
        single,
        batch32,
        by_batch,
        single_tokens,
        batch_tokens,
        single_thread,
        logged,
    )
    out.update(sweep_summary(sweep, threads))
    return out


def sweep_summary(sweep: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The thread sweep's keys: its rows, and how the handler's thread count does against the best."""
    out: dict[str, Any] = {"thread_sweep": sweep}
    if sweep:
        out["sweep_query_tokens"] = SWEEP_QUERY_TOKENS
        best = min(sweep, key=lambda row: row["batch32_ms"]["median"])
        out["best_threads_batch32"] = best["threads"]
        mine = next(row for row in sweep if row["threads"] == threads)
        out["default_threads_vs_best_batch32"] = best["batch32_ms"]["median"] / mine["batch32_ms"]["median"]
    return out


SWEEP_QUERY_TOKENS = 16
"""A short search query, the latency-bound request."""


def thread_sweep(
    cfg: EmbeddingsBenchConfig, cpus: int, texts: TextMaker, batch_tokens: int, progress: Progress
) -> list[dict[str, Any]]:
    """Bare latency of a short query and of a 32-text batch at 1..visible CPUs threads (rotating order).

    The handler takes its ONNX Runtime thread count from the memory's CPU share, as the
    generator does; this shows what each count buys on this machine.
    """
    counts = list(range(1, cpus + 1))
    models = {t: load(cfg.backend, cfg.model_dir, t) for t in counts}
    query = [texts.make(SWEEP_QUERY_TOKENS)]
    batch = [texts.make(batch_tokens) for _ in range(32)]
    query_ms: dict[int, list[float]] = {t: [] for t in counts}
    batch_ms: dict[int, list[float]] = {t: [] for t in counts}
    for model in models.values():
        bare_embed(model, query)
    rounds = max(3, cfg.batch_repeats)
    for i in range(rounds):
        order = counts[i % len(counts) :] + counts[: i % len(counts)]
        for t in order:
            query_ms[t] += [bare_embed(models[t], query) for _ in range(max(5, cfg.repeats // 3))]
            batch_ms[t].append(bare_embed(models[t], batch))
        progress(f"embeddings: thread sweep {i + 1}/{rounds} done")
    return [
        {
            "threads": t,
            "query_ms": summarize(query_ms[t]),
            "batch32_ms": summarize(batch_ms[t]),
            "batch32_tokens_per_s": 32 * batch_tokens / (summarize(batch_ms[t])["median"] / 1000),
        }
        for t in counts
    ]


def _single_thread_throughput(
    cfg: EmbeddingsBenchConfig,
    threads: int,
    bare: BareOnnx | BareTorch,
    pool: list[str],
    by_batch: dict[int, dict[str, list[float]]],
    batch_tokens: int,
) -> float:
    """Bare tokens/s with one thread at the best batch size (the basis of the Lambda projection)."""
    best = max(by_batch, key=lambda b: b * batch_tokens / summarize(by_batch[b]["bare"])["median"])
    model = bare if threads == 1 else load(cfg.backend, cfg.model_dir, 1)
    times = [bare_embed(model, pool[:best]) for _ in range(max(3, cfg.batch_repeats))]
    return float(best * batch_tokens / (summarize(times)["median"] / 1000))


def _summarise(
    cfg: EmbeddingsBenchConfig,
    threads: int,
    cpus: int,
    cold: list[dict[str, Any]],
    bare_cold: list[float],
    single: dict[str, list[float]],
    batch32: dict[str, list[float]],
    by_batch: dict[int, dict[str, list[float]]],
    single_tokens: int,
    batch_tokens: int,
    single_thread: float,
    logged: dict[str, Any],
) -> dict[str, Any]:
    rows = []
    for b in cfg.batch_sizes:
        handler = summarize(by_batch[b]["handler"])
        bare = summarize(by_batch[b]["bare"])
        rows.append(
            {
                "batch": b,
                "handler_ms": handler,
                "bare_ms": bare,
                "handler_tokens_per_s": b * batch_tokens / (handler["median"] / 1000),
                "bare_tokens_per_s": b * batch_tokens / (bare["median"] / 1000),
            }
        )
    best = max(rows, key=lambda row: row["handler_tokens_per_s"])
    s_handler, s_bare = summarize(single["handler"]), summarize(single["bare"])
    b_handler, b_bare = summarize(batch32["handler"]), summarize(batch32["bare"])
    cold_summary = summarize([c["cold_start_s"] for c in cold])
    bare_cold_summary = summarize(bare_cold)
    parts: dict[str, Any] = {
        key: median_or_none([c[key] for c in cold])
        for key in (
            "emulator_ready_s",
            "first_invoke_s",
            "rie_init_ms",
            "handler_init_ms",
            "first_request_ms",
        )
    }
    parts["handler_parts_ms"] = {
        "imports before the model load": median_or_none([c["imports_ms"] for c in cold]),
        "settings + model load": parts["handler_init_ms"],
    }
    return {
        "model": cfg.model_id,
        "backend": cfg.backend,
        "memory_mb": cfg.memory_mb,
        "threads": threads,
        "handler_logged_threads": logged.get("threads"),
        "visible_cpus": cpus,
        "max_seq_length": logged.get("max_input_length"),
        "repeats": cfg.repeats,
        "batch_repeats": cfg.batch_repeats,
        "cold_repeats": cfg.cold_repeats,
        "cold_start_s": cold_summary["median"],
        "bare_cold_start_s": bare_cold_summary["median"],
        "handler_vs_bare_cold_start": cold_summary["median"] / bare_cold_summary["median"],
        "cold_start_parts": parts,
        "text_tokens": single_tokens,
        "handler_p50_ms": s_handler["median"],
        "handler_p95_ms": s_handler["p95"],
        "bare_p50_ms": s_bare["median"],
        "bare_p95_ms": s_bare["p95"],
        "handler_vs_bare_p50": s_handler["median"] / s_bare["median"],
        "batch_texts": 32,
        "batch_text_tokens": batch_tokens,
        "batch_handler_p50_ms": b_handler["median"],
        "batch_handler_p95_ms": b_handler["p95"],
        "batch_bare_p50_ms": b_bare["median"],
        "batch_bare_p95_ms": b_bare["p95"],
        "batch_handler_vs_bare_p50": b_handler["median"] / b_bare["median"],
        "by_batch": rows,
        "best_batch": best["batch"],
        "tokens_per_s": best["handler_tokens_per_s"],
        "bare_tokens_per_s": next(r["bare_tokens_per_s"] for r in rows if r["batch"] == best["batch"]),
        "single_thread_tokens_per_s": single_thread,
        "spread": {
            "cold_start_s": cold_summary,
            "bare_cold_start_s": bare_cold_summary,
            "handler_single_ms": s_handler,
            "bare_single_ms": s_bare,
            "handler_batch32_ms": b_handler,
            "bare_batch32_ms": b_bare,
        },
    }

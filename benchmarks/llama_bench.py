"""The generator measured two ways in one run: through the real handler under the
Runtime Interface Emulator, and with llama-cpp-python's ``Llama`` called directly
with the handler's settings. Runs alternate between the two to cancel drift.

Every speed comes from wall-clock differences between requests that differ in
one thing, the same way on both sides:

* A: a short prompt, one token          -> time to first token
* B: a long prompt, one token           -> prompt processing: (prompt_B - prompt_A) / (t_B - t_A)
* C: a short prompt, ``n_generate`` tokens -> generation: (tokens_C - tokens_A) / (t_C - t_A)

Each request starts with a different number, so llama.cpp cannot reuse the
previous request's prompt from its KV cache.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.stats import median_or_none, summarize
from lambda_common.cpu import default_threads, visible_cpus
from local.rie import IMAGES, EmulatedFunction, FunctionSpec

LLAMA_DIR = IMAGES / "llama"
Progress = Callable[[str], None]

FILLER = (
    "The river keeps its own calendar: it floods in spring, narrows in late summer and freezes "
    "at the edges when the first snow comes. People who live along it learn to read the water. "
)
TASK = " Continue the story in detail, with many new events and names:"


@dataclass(frozen=True)
class LlamaBenchConfig:
    gguf: Path
    memory_mb: int
    repeats: int = 5
    cold_repeats: int = 3
    n_generate: int = 128
    long_prompt_tokens: int = 512
    sweep: bool = True
    threads: int | None = None
    """N_THREADS as cdk.json configures it; None: the handler's CPU-share default."""
    log_dir: Path = field(default_factory=lambda: Path(".cache/bench"))

    @property
    def handler_threads(self) -> int:
        """The handler's thread count: ``threads``, else its CPU-share default on this machine's CPUs."""
        return self.threads or default_threads(self.memory_mb, visible_cpus())


@dataclass(frozen=True)
class Timed:
    """One request: wall seconds and the token counts the side reported."""

    seconds: float
    prompt_tokens: int
    completion_tokens: int


def handler_settings() -> dict[str, Any]:
    """The handler's Llama settings (its own defaults, read from its settings model)."""
    if str(LLAMA_DIR) not in sys.path:
        sys.path.insert(0, str(LLAMA_DIR))
    from llama_app.settings import LlamaSettings

    fields = LlamaSettings.model_fields
    return {
        "n_ctx": fields["n_ctx"].default,
        "n_batch": fields["n_batch"].default,
        "use_mmap": fields["use_mmap"].default,
    }


def sampling() -> dict[str, Any]:
    """Greedy decoding with the handler's other sampling defaults, sent to both sides."""
    return {"temperature": 0.0, "top_p": 0.95, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.0, "seed": 7}


class PromptMaker:
    """Prompts of a given token length, each opening with a fresh number."""

    def __init__(self, tokenize: Callable[[str], int]) -> None:
        self._count = tokenize
        self._serial = 100_000

    def make(self, tokens: int) -> str:
        """A prompt of at most ``tokens`` tokens, as close as whole words allow, opening with a new number."""
        self._serial += 1
        words = [f"Note {self._serial}."]
        filler = FILLER.split()

        def fits(extra: list[str]) -> bool:
            return self._count(" ".join(words + extra) + TASK) <= tokens

        while fits(filler):
            words += filler
        for word in filler:
            if not fits([word]):
                break
            words.append(word)
        return " ".join(words) + TASK


# ------------------------------------------------------------------ the two sides


class BareSide:
    """llama-cpp-python's Llama in this process, built as the handler builds it."""

    name = "bare"

    def __init__(self, gguf: Path, threads: int) -> None:
        from llama_cpp import Llama

        settings = handler_settings()
        self.threads = threads
        self.llm = Llama(
            model_path=str(gguf),
            n_ctx=settings["n_ctx"],
            n_batch=min(settings["n_batch"], settings["n_ctx"]),
            n_threads=threads,
            n_threads_batch=threads,
            use_mmap=settings["use_mmap"],
            verbose=False,
        )

    def set_threads(self, threads: int) -> None:
        import llama_cpp

        llama_cpp.llama_set_n_threads(self.llm._ctx.ctx, threads, threads)
        self.llm.n_threads = threads
        self.llm.n_threads_batch = threads
        self.threads = threads

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=True))

    def complete(self, prompt: str, n: int) -> Timed:
        started = time.perf_counter()
        result = self.llm.create_completion(prompt, max_tokens=n, stream=False, **sampling())
        seconds = time.perf_counter() - started
        usage = result["usage"]  # type: ignore[index]  # stream=False returns one response
        return Timed(seconds, int(usage["prompt_tokens"]), int(usage["completion_tokens"]))


def token_counter(gguf: Path) -> Callable[[str], int]:
    """``BareSide.count_tokens`` without the weights: the model's vocabulary alone (``vocab_only``)."""
    from llama_cpp import Llama

    vocabulary = Llama(model_path=str(gguf), vocab_only=True, verbose=False)

    def count_tokens(text: str) -> int:
        return len(vocabulary.tokenize(text.encode("utf-8"), add_bos=True))

    return count_tokens


class HandlerSide:
    """The real handler behind the RIE: a direct-invoke llama.cpp-style payload."""

    name = "handler"

    def __init__(self, function: EmulatedFunction) -> None:
        self.function = function

    def complete(self, prompt: str, n: int) -> Timed:
        payload = {"prompt": prompt, "n-generate": n, **sampling()}
        started = time.perf_counter()
        result = self.function.invoke(payload, timeout_s=600)
        seconds = time.perf_counter() - started
        body = result.json()
        if result.status != 200 or "error" in body or "usage" not in body:
            raise RuntimeError(f"the llama handler refused the benchmark request: {result.status} {body}")
        usage = body["usage"]
        return Timed(seconds, int(usage["prompt_tokens"]), int(usage["completion_tokens"]))


def function_spec(gguf: Path, memory_mb: int, threads: int | None = None) -> FunctionSpec:
    extra = {"N_THREADS": str(threads)} if threads is not None else {}
    return FunctionSpec(
        name="bench-llama",
        code_dir=LLAMA_DIR,
        memory_mb=memory_mb,
        timeout_s=900,
        environment={
            "MODEL_PATH": str(gguf),
            "MODEL_ALIAS": gguf.stem,
            "POWERTOOLS_SERVICE_NAME": "llama-generator",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            **extra,
        },
    )


@contextmanager
def emulated(spec: FunctionSpec, log_path: Path) -> Iterator[EmulatedFunction]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)
    function = EmulatedFunction(spec, log_path=log_path)
    try:
        yield function.start()
    finally:
        function.stop()


# ------------------------------------------------------------------ measurements


def measure_round(
    side: HandlerSide | BareSide, prompts: PromptMaker, cfg: LlamaBenchConfig, attempts: int = 3
) -> dict[str, float]:
    """One A/B/C round on one side: TTFT, prompt and generation speeds.

    A difference that comes out zero or negative means the machine stalled one
    request; the round is run again, and after ``attempts`` the run stops.
    """
    for _ in range(attempts):
        a = side.complete(prompts.make(16), 1)
        b = side.complete(prompts.make(cfg.long_prompt_tokens), 1)
        c = side.complete(prompts.make(16), cfg.n_generate)
        pp_span = b.seconds - a.seconds
        tg_span = c.seconds - a.seconds
        if pp_span > 0 and tg_span > 0 and c.completion_tokens > a.completion_tokens:
            return {
                "ttft_ms": a.seconds * 1000,
                "long_prompt_ttft_ms": b.seconds * 1000,
                "prompt_tokens_per_s": (b.prompt_tokens - a.prompt_tokens) / pp_span,
                "tokens_per_s": (c.completion_tokens - a.completion_tokens) / tg_span,
                "generated_tokens": float(c.completion_tokens),
                "long_prompt_tokens": float(b.prompt_tokens),
            }
    raise RuntimeError(
        f"{side.name}: the long requests kept finishing no later than the short one ({attempts} tries); "
        "the machine is too busy to measure, or the model stops generating at once"
    )


BARE_COLD_SCRIPT = r"""
import json, sys, time
from llama_cpp import Llama
settings = json.loads(sys.argv[2])
llm = Llama(model_path=sys.argv[1], n_ctx=settings["n_ctx"],
            n_batch=min(settings["n_batch"], settings["n_ctx"]), n_threads=settings["threads"],
            n_threads_batch=settings["threads"], use_mmap=settings["use_mmap"], verbose=False)
out = llm.create_completion(settings["prompt"], max_tokens=1, **settings["sampling"])
print(json.dumps({"completion_tokens": out["usage"]["completion_tokens"]}), flush=True)
"""


def bare_cold_start(gguf: Path, threads: int, prompt: str) -> float:
    """Seconds from spawning a Python process to its first generated token, bare library."""
    settings = {**handler_settings(), "threads": threads, "prompt": prompt, "sampling": sampling()}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", BARE_COLD_SCRIPT, str(gguf), json.dumps(settings)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    seconds = time.perf_counter() - started
    _, err = process.communicate(timeout=120)
    if process.returncode != 0 or not line:
        raise RuntimeError(f"bare cold-start probe failed ({process.returncode}): {err[-2000:]}")
    return seconds


def handler_cold_start(cfg: LlamaBenchConfig, prompt: str, index: int) -> dict[str, Any]:
    """A fresh emulator: seconds from starting it to the first token of its first invoke, and the parts."""
    log = cfg.log_dir / f"llama-cold-{index}.log"
    spec = function_spec(cfg.gguf, cfg.memory_mb, cfg.threads)
    started = time.perf_counter()
    with emulated(spec, log) as function:
        ready = time.perf_counter()
        result = function.invoke({"prompt": prompt, "n-generate": 1, **sampling()}, timeout_s=600)
        done = time.perf_counter()
    body = result.json()
    if result.status != 200 or "timings" not in body:
        raise RuntimeError(f"the llama handler failed its first invoke: {result.status} {body}")
    timings = body["timings"]
    return {
        "cold_start_s": done - started,
        "emulator_ready_s": ready - started,
        "first_invoke_s": done - ready,
        "rie_init_ms": _rie_init_ms(log),
        "handler_init_ms": float(timings["init_ms"]) if timings.get("init_ms") is not None else None,
        "first_token_ms": float(timings["prompt_ms"]),
        "cold_start_flag": float(bool(timings.get("cold_start"))),
        "threads": _logged_threads(log),
    }


def _rie_init_ms(log: Path) -> float | None:
    match = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", log.read_text(errors="replace"))
    return float(match.group(1)) if match else None


def _logged_threads(log: Path) -> int | None:
    for line in log.read_text(errors="replace").splitlines():
        if '"model loaded"' in line:
            try:
                return int(json.loads(line[line.index("{") :])["n_threads"])
            except (ValueError, KeyError):
                return None
    return None


def run(cfg: LlamaBenchConfig, progress: Progress) -> dict[str, Any]:
    """Cold starts, warm speeds (handler and bare, alternating) and the thread sweep."""
    cpus = visible_cpus()
    threads = cfg.handler_threads
    settings = handler_settings()
    progress(f"llama: {cfg.gguf.name}, handler at {cfg.memory_mb} MB -> {threads} thread(s) on {cpus} CPU(s)")

    bare = BareSide(cfg.gguf, threads)
    prompts = PromptMaker(bare.count_tokens)

    # Cold starts, alternating handler and bare.
    cold: list[dict[str, Any]] = []
    bare_cold: list[float] = []
    for i in range(cfg.cold_repeats):
        order = ("handler", "bare") if i % 2 == 0 else ("bare", "handler")
        for side in order:
            if side == "handler":
                cold.append(handler_cold_start(cfg, prompts.make(16), i))
                progress(
                    f"llama: cold start {i + 1}/{cfg.cold_repeats} handler {cold[-1]['cold_start_s']:.2f} s"
                )
            else:
                bare_cold.append(bare_cold_start(cfg.gguf, threads, prompts.make(16)))
                progress(f"llama: cold start {i + 1}/{cfg.cold_repeats} bare {bare_cold[-1]:.2f} s")

    # Warm rounds, alternating which side goes first.
    rounds: dict[str, list[dict[str, float]]] = {"handler": [], "bare": []}
    with emulated(
        function_spec(cfg.gguf, cfg.memory_mb, cfg.threads), cfg.log_dir / "llama-warm.log"
    ) as function:
        handler = HandlerSide(function)
        handler.complete(prompts.make(16), 1)  # pays the init; warm from here on
        measure_round(bare, prompts, cfg)  # warms this side's caches the same way
        for i in range(cfg.repeats):
            sides: tuple[HandlerSide | BareSide, ...] = (handler, bare) if i % 2 == 0 else (bare, handler)
            for runner in sides:
                result = measure_round(runner, prompts, cfg)
                rounds[runner.name].append(result)
                progress(
                    f"llama: round {i + 1}/{cfg.repeats} {runner.name:7} "
                    f"{result['tokens_per_s']:7.1f} tokens/s, "
                    f"prompt {result['prompt_tokens_per_s']:7.1f} tokens/s, TTFT {result['ttft_ms']:6.1f} ms"
                )
        logged = _logged_threads(cfg.log_dir / "llama-warm.log")

    sweep = thread_sweep(bare, prompts, cfg, cpus, progress) if cfg.sweep else []
    out = _summarise(cfg, threads, cpus, settings, cold, bare_cold, rounds, sweep)
    out["handler_logged_threads"] = logged
    return out


def thread_sweep(
    bare: BareSide, prompts: PromptMaker, cfg: LlamaBenchConfig, cpus: int, progress: Progress
) -> list[dict[str, Any]]:
    """Generation and prompt speed at 1..visible CPUs threads (bare library, rotating order)."""
    counts = list(range(1, cpus + 1))
    results: dict[int, list[dict[str, float]]] = {t: [] for t in counts}
    for i in range(cfg.repeats):
        order = counts[i % len(counts) :] + counts[: i % len(counts)]
        for t in order:
            bare.set_threads(t)
            results[t].append(measure_round(bare, prompts, cfg))
            speed = results[t][-1]["tokens_per_s"]
            progress(f"llama: sweep {i + 1}/{cfg.repeats} {t} thread(s) {speed:.1f} tokens/s")
    return [
        {
            "threads": t,
            "tokens_per_s": summarize([r["tokens_per_s"] for r in results[t]]),
            "prompt_tokens_per_s": summarize([r["prompt_tokens_per_s"] for r in results[t]]),
        }
        for t in counts
    ]


def _summarise(
    cfg: LlamaBenchConfig,
    threads: int,
    cpus: int,
    settings: dict[str, Any],
    cold: list[dict[str, Any]],
    bare_cold: list[float],
    rounds: dict[str, list[dict[str, float]]],
    sweep: list[dict[str, Any]],
) -> dict[str, Any]:
    def series(side: str, key: str) -> dict[str, Any]:
        return summarize([r[key] for r in rounds[side]])

    spread = {
        f"{side}_{key}": series(side, key)
        for side in ("handler", "bare")
        for key in ("tokens_per_s", "prompt_tokens_per_s", "ttft_ms", "long_prompt_ttft_ms")
    }
    spread["cold_start_s"] = summarize([c["cold_start_s"] for c in cold])
    spread["bare_cold_start_s"] = summarize(bare_cold)
    out: dict[str, Any] = {
        "model": cfg.gguf.name,
        "model_bytes": cfg.gguf.stat().st_size,
        "memory_mb": cfg.memory_mb,
        "threads": threads,
        "visible_cpus": cpus,
        "settings": {**settings, "n_generate": cfg.n_generate, "long_prompt_tokens": cfg.long_prompt_tokens},
        "sampling": sampling(),
        "repeats": cfg.repeats,
        "cold_repeats": cfg.cold_repeats,
        "handler_tokens_per_s": spread["handler_tokens_per_s"]["median"],
        "bare_tokens_per_s": spread["bare_tokens_per_s"]["median"],
        "handler_prompt_tokens_per_s": spread["handler_prompt_tokens_per_s"]["median"],
        "bare_prompt_tokens_per_s": spread["bare_prompt_tokens_per_s"]["median"],
        "handler_ttft_ms": spread["handler_ttft_ms"]["median"],
        "bare_ttft_ms": spread["bare_ttft_ms"]["median"],
        "handler_long_prompt_ttft_ms": spread["handler_long_prompt_ttft_ms"]["median"],
        "bare_long_prompt_ttft_ms": spread["bare_long_prompt_ttft_ms"]["median"],
        "cold_start_s": spread["cold_start_s"]["median"],
        "bare_cold_start_s": spread["bare_cold_start_s"]["median"],
        "cold_start_parts": {
            key: median_or_none([c[key] for c in cold])
            for key in (
                "emulator_ready_s",
                "first_invoke_s",
                "rie_init_ms",
                "handler_init_ms",
                "first_token_ms",
            )
        },
        "generated_tokens": summarize([r["generated_tokens"] for r in rounds["handler"]])["median"],
        "long_prompt_tokens": summarize([r["long_prompt_tokens"] for r in rounds["handler"]])["median"],
        "spread": spread,
    }
    out["handler_vs_bare_tokens_per_s"] = out["handler_tokens_per_s"] / out["bare_tokens_per_s"]
    out["handler_vs_bare_prompt_tokens_per_s"] = (
        out["handler_prompt_tokens_per_s"] / out["bare_prompt_tokens_per_s"]
    )
    out["handler_vs_bare_ttft"] = out["handler_ttft_ms"] / out["bare_ttft_ms"]
    out["handler_vs_bare_cold_start"] = out["cold_start_s"] / out["bare_cold_start_s"]
    if sweep:
        best = max(sweep, key=lambda row: row["tokens_per_s"]["median"])
        default_row = next(row for row in sweep if row["threads"] == threads)
        out["thread_sweep"] = sweep
        out["best_threads"] = best["threads"]
        out["default_threads_vs_best"] = (
            default_row["tokens_per_s"]["median"] / best["tokens_per_s"]["median"]
        )
        out["default_threads_within_10pct"] = out["default_threads_vs_best"] >= 0.9
        single = next(row for row in sweep if row["threads"] == 1)
        out["single_thread_tokens_per_s"] = single["tokens_per_s"]["median"]
        out["single_thread_prompt_tokens_per_s"] = single["prompt_tokens_per_s"]["median"]
    return out

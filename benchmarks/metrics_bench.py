"""What the per-request metrics cost: each handler with metrics on and off, alternating, in one run.

Two copies of the function run under the Runtime Interface Emulator at once,
as the rest of the bench runs them, one with ``POWERTOOLS_METRICS_DISABLED=true``
in its environment (what the stack sets for ``metrics_enabled: false``): no
record is collected or written. The requests alternate between them, and so
does which goes first. The generator is compared on generation speed
(``(tokens_C - tokens_A) / (t_C - t_A)``, as ``llama_bench`` measures it,
without the long-prompt request), the embeddings function on the warm latency
of one text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import embeddings_bench, llama_bench
from benchmarks.bare_embeddings import load
from benchmarks.stats import summarize
from local.rie import EmulatedFunction, FunctionSpec

Progress = Callable[[str], None]
OFF = {"POWERTOOLS_METRICS_DISABLED": "true"}
METHOD = (
    "Two copies of the handler under the Runtime Interface Emulator, one with "
    "POWERTOOLS_METRICS_DISABLED=true, requests alternating (and which goes first); off / on of the "
    "medians. Generator: generation tokens/s from a 1-token and an n-token request on fresh 16-token "
    "prompts; embeddings: warm latency of one text."
)


def alternating(
    rounds: int,
    measure: Callable[[str], float],
    after_round: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> dict[str, list[float]]:
    """``measure("on")`` and ``measure("off")`` once a round, which goes first alternating."""
    got: dict[str, list[float]] = {"on": [], "off": []}
    for i in range(rounds):
        for name in ("on", "off") if i % 2 == 0 else ("off", "on"):
            got[name].append(measure(name))
        if after_round is not None:
            after_round(i, got)
    return got


def metrics_off(spec: FunctionSpec) -> FunctionSpec:
    return replace(spec, name=f"{spec.name}-metrics-off", environment={**spec.environment, **OFF})


@contextmanager
def on_and_off(spec: FunctionSpec, log_dir: Path, stem: str) -> Iterator[dict[str, EmulatedFunction]]:
    with ExitStack() as stack:
        yield {
            "on": stack.enter_context(llama_bench.emulated(spec, log_dir / f"{stem}-metrics-on.log")),
            "off": stack.enter_context(
                llama_bench.emulated(metrics_off(spec), log_dir / f"{stem}-metrics-off.log")
            ),
        }


def _generation(
    side: llama_bench.HandlerSide, prompts: llama_bench.PromptMaker, n: int, tries: int = 3
) -> float:
    for _ in range(tries):
        a = side.complete(prompts.make(16), 1)
        c = side.complete(prompts.make(16), n)
        if c.seconds > a.seconds and c.completion_tokens > a.completion_tokens:
            return (c.completion_tokens - a.completion_tokens) / (c.seconds - a.seconds)
    raise RuntimeError(
        "the n-token request kept finishing no later than the 1-token one: too busy to measure"
    )


def run_llama(cfg: llama_bench.LlamaBenchConfig, progress: Progress) -> dict[str, Any]:
    """``llama.metrics_off_vs_on_tokens_per_s``: generation speed with metrics off over on."""
    prompts = llama_bench.PromptMaker(llama_bench.token_counter(cfg.gguf))
    spec = llama_bench.function_spec(cfg.gguf, cfg.memory_mb, cfg.threads)
    rounds = max(cfg.repeats, 2)

    def report(i: int, speeds: dict[str, list[float]]) -> None:
        progress(
            f"llama: metrics {i + 1}/{rounds}: on {speeds['on'][-1]:.1f} tokens/s, "
            f"off {speeds['off'][-1]:.1f} tokens/s"
        )

    with on_and_off(spec, cfg.log_dir, "llama") as functions:
        sides = {name: llama_bench.HandlerSide(function) for name, function in functions.items()}
        for side in sides.values():
            side.complete(prompts.make(16), 1)  # pays the init
        speeds = alternating(
            rounds, lambda name: _generation(sides[name], prompts, cfg.n_generate), after_round=report
        )
    return summarise_llama(speeds)


def summarise_llama(speeds: dict[str, list[float]]) -> dict[str, Any]:
    """The ``llama.metrics_*`` keys from the generation speeds with metrics ``on`` and ``off``."""
    on, off = summarize(speeds["on"]), summarize(speeds["off"])
    return {
        "metrics_on_tokens_per_s": on["median"],
        "metrics_off_tokens_per_s": off["median"],
        "metrics_off_vs_on_tokens_per_s": off["median"] / on["median"],
        "metrics_method": METHOD,
        "metrics_spread": {"on_tokens_per_s": on, "off_tokens_per_s": off},
    }


def run_embeddings(cfg: embeddings_bench.EmbeddingsBenchConfig, progress: Progress) -> dict[str, Any]:
    """``embeddings.metrics_off_vs_on_p50``: warm latency of one text with metrics off over on."""
    bare = load(cfg.backend, cfg.model_dir, cfg.handler_threads)  # its tokenizer sizes the text
    texts = embeddings_bench.TextMaker(bare.count_tokens)
    one = [texts.make(min(cfg.single_tokens, bare.max_seq_length))]
    with on_and_off(embeddings_bench.function_spec(cfg), cfg.log_dir, "embeddings") as functions:
        for function in functions.values():
            embeddings_bench.handler_embed(function, ["warm up"])
        latency = alternating(cfg.repeats, lambda name: embeddings_bench.handler_embed(functions[name], one))
    out = summarise_embeddings(latency)
    progress(
        f"embeddings: one text with metrics on {out['metrics_on_p50_ms']:.1f} ms (p50), "
        f"off {out['metrics_off_p50_ms']:.1f} ms"
    )
    return out


def summarise_embeddings(latency: dict[str, list[float]]) -> dict[str, Any]:
    """The ``embeddings.metrics_*`` keys from one text's latencies with metrics ``on`` and ``off``."""
    on, off = summarize(latency["on"]), summarize(latency["off"])
    return {
        "metrics_on_p50_ms": on["median"],
        "metrics_off_p50_ms": off["median"],
        "metrics_off_vs_on_p50": off["median"] / on["median"],
        "metrics_method": METHOD,
        "metrics_spread": {"on_ms": on, "off_ms": off},
    }

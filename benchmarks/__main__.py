"""``make bench``: measure both functions, write results.json, results.md and the charts.

    python -m benchmarks                       # the embedded models, as cdk.json deploys them
    python -m benchmarks --quick               # a short run that checks everything works
    python -m benchmarks --llama-model my.gguf --embeddings-model ./st-folder --embeddings-model-id org/name
    python -m benchmarks --only llama          # one function (the report needs both)

Run it on a quiet machine: the numbers are wall-clock times.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks import machine, report
from benchmarks.batch_bench import BatchSettings
from benchmarks.cost import snapstart_results
from benchmarks.embeddings_bench import EmbeddingsBenchConfig
from benchmarks.llama_bench import LlamaBenchConfig
from benchmarks.prices import load_prices
from benchmarks.projection import project
from stacks.config import AppConfig, FunctionConfig, load_config

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
LOG_DIR = ROOT / ".cache" / "bench"
SNAPSTART_PROMPT = "The river keeps its own calendar."
"""A short prompt (about 12 tokens with its number): the restore or init, then one token, not a prompt."""
BUSY_LOAD_PER_CPU = 0.5
"""One-minute load average per CPU above which, before the run, the results are marked as taken busy."""


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure the generator and the embedding function through their real handlers under the "
        "Lambda Runtime Interface Emulator and with the bare libraries, alternating, on the embedded models "
        "or the ones given; write results.json, results.md and charts.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="few, short repeats: checks the pipeline, not for publishing"
    )
    parser.add_argument("--only", choices=("llama", "embeddings"), help="measure one function only")
    parser.add_argument("--llama-model", type=Path, help="GGUF file (default: the embedded SmolLM2-135M)")
    parser.add_argument(
        "--llama-memory-mb", type=int, help="memory the handler believes it has (default: cdk.json)"
    )
    parser.add_argument(
        "--embeddings-model",
        type=Path,
        help="sentence-transformers folder (default: the embedded all-MiniLM-L6-v2)",
    )
    parser.add_argument("--embeddings-model-id", help="its model id (default: the folder name)")
    parser.add_argument("--embeddings-backend", choices=("onnx", "torch"), help="default: cdk.json's")
    parser.add_argument("--embeddings-memory-mb", type=int, help="default: cdk.json")
    parser.add_argument(
        "--repeats", type=int, help="warm repeats (default 5 for the generator, 30 for embeddings)"
    )
    parser.add_argument("--region", default="us-east-1", help="prices for the projection (default us-east-1)")
    parser.add_argument(
        "--out", type=Path, default=BENCH_DIR, help="where results.json, results.md, charts/ go"
    )
    parser.add_argument("--readme", action="store_true", help="also rewrite README.md's bench block")
    args = parser.parse_args(argv)
    for name in ("llama_memory_mb", "embeddings_memory_mb"):
        value = getattr(args, name)
        if value is not None and not 128 <= value <= 10240:
            parser.error(f"--{name.replace('_', '-')} must be between 128 and 10240 MB, got {value}")
    if args.repeats is not None and args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.llama_model is not None and not args.llama_model.is_file():
        parser.error(f"--llama-model: no file at {args.llama_model}")
    if args.embeddings_model is not None and not (args.embeddings_model / "modules.json").is_file():
        parser.error(f"--embeddings-model: {args.embeddings_model} is not a sentence-transformers folder")
    return args


def llama_config(args: argparse.Namespace, deployed: FunctionConfig) -> LlamaBenchConfig:
    from local.models import embedded_gguf

    cfg = LlamaBenchConfig(
        gguf=(args.llama_model or embedded_gguf()).resolve(),
        memory_mb=args.llama_memory_mb or deployed.memory_mb,
        threads=deployed.threads,
        log_dir=LOG_DIR,
    )
    if args.quick:
        cfg = replace(cfg, repeats=1, cold_repeats=1, n_generate=24, long_prompt_tokens=96)
    if args.repeats is not None:
        cfg = replace(cfg, repeats=args.repeats)
    return cfg


def embeddings_config(args: argparse.Namespace, config: AppConfig) -> EmbeddingsBenchConfig:
    from local.functions import prepare_embeddings_model
    from local.models import EMBEDDINGS_MODEL_ID, embedded_embeddings_model

    source = (args.embeddings_model or embedded_embeddings_model()).resolve()
    model_id = args.embeddings_model_id or (
        EMBEDDINGS_MODEL_ID if args.embeddings_model is None else source.name
    )
    backend = args.embeddings_backend or config.embeddings_model.backend
    model_dir = prepare_embeddings_model(source, model_id, echo=progress) if backend == "onnx" else source
    cfg = EmbeddingsBenchConfig(
        model_dir=model_dir,
        model_id=model_id,
        backend=backend,
        memory_mb=args.embeddings_memory_mb or config.embeddings.memory_mb,
        source_dir=source,
        threads=config.embeddings.threads,
        log_dir=LOG_DIR,
    )
    if args.quick:
        cfg = replace(
            cfg, repeats=3, batch_repeats=1, cold_repeats=1, batch_text_tokens=32, batch_sizes=(1, 8, 32)
        )
    if args.repeats is not None:
        cfg = replace(cfg, repeats=args.repeats)
    return cfg


def run_llama(cfg: LlamaBenchConfig) -> dict[str, Any]:
    """The generator: handler and bare, then streaming, structured output, metrics and SnapStart."""
    from benchmarks import llama_bench, metrics_bench, snapstart_bench, stream_bench

    out = llama_bench.run(cfg, progress)
    out.update(stream_bench.run(cfg, progress))
    out.update(metrics_bench.run_llama(cfg, progress))
    out.update(
        snapstart_bench.run(
            "llama",
            {"llama_model": cfg.gguf, "memory_mb": {"llama": cfg.memory_mb}},
            {"N_THREADS": str(cfg.handler_threads)},
            lambda n: {
                "prompt": f"Note {n}. {SNAPSTART_PROMPT}",
                "n-generate": 1,
                **llama_bench.sampling(),
            },
            repeats=cfg.cold_repeats,
            log_dir=cfg.log_dir / "snapstart-llama",
            progress=progress,
        )
    )
    return out


def run_embeddings(cfg: EmbeddingsBenchConfig, region: str) -> dict[str, Any]:
    """The embeddings function: handler and bare, then metrics, SnapStart and the memory settings."""
    from benchmarks import embeddings_bench, metrics_bench, snapstart_bench
    from benchmarks.memory_settings import memory_settings

    out = embeddings_bench.run(cfg, progress)
    out.update(metrics_bench.run_embeddings(cfg, progress))
    model = {
        "embeddings_model": cfg.source_dir,
        "embeddings_model_id": cfg.model_id,
        "embeddings_backend": cfg.backend,
        "memory_mb": {"embeddings": cfg.memory_mb},
    }
    out.update(
        snapstart_bench.run(
            "embeddings",
            model,
            {"N_THREADS": str(cfg.handler_threads)},
            lambda n: {"inputs": [f"entry {n}: mountain villages keep old recipes"]},
            repeats=cfg.cold_repeats,
            log_dir=cfg.log_dir / "snapstart-embeddings",
            progress=progress,
        )
    )
    out["memory_settings"] = memory_settings(out, region=region)
    return out


def run_batch(
    cfg: EmbeddingsBenchConfig, args: argparse.Namespace, settings: BatchSettings
) -> dict[str, Any]:
    """The bulk-embedding function against the online handler, and its projected price."""
    from benchmarks import batch_bench

    records = 64 if args.quick else settings.items_per_batch
    rounds = 1 if args.quick else 5
    return batch_bench.run(
        cfg.model_dir,
        cfg.model_id,
        cfg.backend,
        settings=settings,
        records=records,
        rounds=rounds,
        region=args.region,
        progress=progress,
    )


def busy_note(before: list[float], after: list[float], cpus: int) -> dict[str, Any]:
    note: dict[str, Any] = {"load_before": before, "load_after": after}
    if before and before[0] > BUSY_LOAD_PER_CPU * cpus:
        note["warning"] = (
            f"The machine was busy (1-minute load average {before[0]} on {cpus} CPUs before the run): "
            "timings are unreliable."
        )
    return note


def projection(results: dict[str, Any], region: str) -> dict[str, Any]:
    """Lambda cost per million tokens by memory size, from this run's single-thread speeds."""
    prices = load_prices()
    speeds: dict[str, float] = {}
    series = []
    if "llama" in results:
        speeds["generator_output"] = results["llama"]["single_thread_tokens_per_s"]
        speeds["generator_input"] = results["llama"]["single_thread_prompt_tokens_per_s"]
        series += [
            {"key": "generator_output", "label": f"generator output ({results['llama']['model']})"},
            {"key": "generator_input", "label": f"generator input ({results['llama']['model']})"},
        ]
    if "embeddings" in results:
        speeds["embeddings"] = results["embeddings"]["single_thread_tokens_per_s"]
        series.append({"key": "embeddings", "label": f"embeddings ({results['embeddings']['model']})"})
    out = project(speeds, region=region, prices=prices)
    out["series"] = series
    kinds = ({"generation"} if "llama" in results else set()) | (
        {"embeddings"} if "embeddings" in results else set()
    )
    out["managed"] = [
        {"name": offer.name, "usd_per_million": str(offer.input_per_million), "kind": offer.kind}
        for offer in prices.managed
        if offer.kind in kinds
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    config = load_config()  # cdk.json, read and validated once for the whole run
    described = machine.describe()
    cpus = int(described["visible_cpus"])
    results: dict[str, Any] = {
        "schema": 1,
        "command": " ".join(
            ["python -m benchmarks", shlex.join(list(argv if argv is not None else sys.argv[1:]))]
        ).strip(),
        "quick": args.quick,
        "machine": described,
    }
    before = machine.load_average()
    progress(f"machine: {described['cpu_model']}, {cpus} CPUs, load average {before}")
    started = time.perf_counter()

    if args.only in (None, "llama"):
        results["llama"] = run_llama(llama_config(args, config.llama))
    if args.only in (None, "embeddings"):
        cfg = embeddings_config(args, config)
        results["embeddings"] = run_embeddings(cfg, args.region)
        results["batch"] = run_batch(cfg, args, BatchSettings.of(config))

    results["projection"] = projection(results, args.region)
    results["cost"] = snapstart_results(args.region, config)
    results["busy"] = busy_note(before, machine.load_average(), cpus)
    results["duration_s"] = round(time.perf_counter() - started, 1)
    if results["busy"].get("warning"):
        progress(results["busy"]["warning"])

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results_path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    progress(f"wrote {results_path}")
    if "llama" in results and "embeddings" in results:
        publish = args.out.resolve() == BENCH_DIR
        for path in report.write_all(
            results,
            args.out,
            performance_doc=report.PERFORMANCE_DOC if publish else None,
            readme=report.README if args.readme else None,
            configuration_doc=report.CONFIGURATION_DOC if publish else None,
        ):
            progress(f"wrote {path}")
    else:
        progress("one function only: results.json written, the report needs both")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

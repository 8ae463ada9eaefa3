"""What `make local` runs: both functions configured as the stack deploys them.

Memory size, timeout, thread count and log level come from ``cdk.json``'s
context through ``stacks.config`` (the same values ``cdk deploy`` uses, so a
local run sees the CPU-share-based thread count and the timeout a deployed
function sees); the model is a local file instead of the one baked into the
image: by default the small embedded models from PyPI (``local.models``).

The embeddings function's default ONNX backend loads a folder written by the
image's build-time exporter (``lambda_images/embeddings/export_onnx.py``), not
a sentence-transformers folder; ``prepare_embeddings_model`` runs that same
exporter once and caches its output under ``.cache/local/onnx/``, keyed by the
model's files and the exporter's code.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from local.models import EMBEDDINGS_MODEL_ID, embedded_embeddings_model, embedded_gguf
from local.rie import IMAGES, ROOT, FunctionSpec
from local.stack import FunctionPlan
from stacks.config import UrlInvokeMode, load_config

FunctionKey = Literal["llama", "embeddings"]
FUNCTION_KEYS: tuple[FunctionKey, ...] = ("llama", "embeddings")

DEFAULT_PORTS: dict[FunctionKey, tuple[int, int]] = {"llama": (9000, 8080), "embeddings": (9001, 8081)}
"""(Invoke API, Function URL) port of each function."""

ONNX_CACHE = ROOT / ".cache" / "local" / "onnx"
EMBEDDINGS_CODE = IMAGES / "embeddings"

Echo = Callable[[str], None]


@dataclass(frozen=True)
class Deployed:
    """The settings of one function as ``cdk.json`` deploys it."""

    memory_mb: int
    timeout_s: int
    threads: int | None
    log_level: str
    url_invoke_mode: UrlInvokeMode
    """How the function's URL frames answers (RESPONSE_STREAM or BUFFERED), as FUNCTION_URL_INVOKE_MODE."""
    snap_start: bool
    """Deployed with SnapStart: a local run can then go through the snapshot lifecycle."""
    backend: str = "onnx"


def deployed_settings(cdk_json: Path = ROOT / "cdk.json") -> dict[FunctionKey, Deployed]:
    """Each function's memory, timeout, threads and log level from cdk.json, validated by stacks.config.

    cdk.json is the one place the defaults live, so without it there is nothing to run with:
    a missing file is a FileNotFoundError that says so, a bad value a ``stacks.config.ConfigError``.
    """

    config = load_config(cdk_json=cdk_json)
    return {
        "llama": Deployed(
            memory_mb=config.llama.memory_mb,
            timeout_s=config.llama.timeout_s,
            threads=config.llama.threads,
            log_level=config.log_level,
            url_invoke_mode=config.llama.url_invoke_mode,
            snap_start=config.llama.snap_start,
        ),
        "embeddings": Deployed(
            memory_mb=config.embeddings.memory_mb,
            timeout_s=config.embeddings.timeout_s,
            threads=config.embeddings.threads,
            log_level=config.log_level,
            url_invoke_mode=config.embeddings.url_invoke_mode,
            snap_start=config.embeddings.snap_start,
            backend=config.embeddings_model.backend,
        ),
    }


@dataclass(frozen=True)
class LocalOptions:
    """Everything `python -m local` can be told."""

    only: FunctionKey | None = None
    llama_model: Path | None = None
    embeddings_model: Path | None = None
    embeddings_model_id: str | None = None
    embeddings_backend: str | None = None
    api_key: str | None = None
    llama_invoke_port: int = DEFAULT_PORTS["llama"][0]
    llama_url_port: int = DEFAULT_PORTS["llama"][1]
    embeddings_invoke_port: int = DEFAULT_PORTS["embeddings"][0]
    embeddings_url_port: int = DEFAULT_PORTS["embeddings"][1]
    log_level: str | None = None
    memory_mb: Mapping[str, int] = field(default_factory=dict)
    """Memory size per function key, instead of cdk.json's."""
    timeout_s: Mapping[str, int] = field(default_factory=dict)
    """Timeout per function key, instead of cdk.json's."""
    extra_environment: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """More variables per function key (tests tighten generation limits this way)."""
    url_invoke_mode: Mapping[str, UrlInvokeMode] = field(default_factory=dict)
    """Function URL invoke mode per function key, instead of cdk.json's."""
    snap_start: Mapping[str, bool] = field(default_factory=dict)
    """Whether to run the SnapStart lifecycle, per function key, instead of cdk.json's ``*_snap_start``."""

    def selected(self) -> tuple[FunctionKey, ...]:
        return (self.only,) if self.only else FUNCTION_KEYS


def _common_environment(key: FunctionKey, deployed: Deployed, options: LocalOptions) -> dict[str, str]:
    env = {
        "POWERTOOLS_SERVICE_NAME": key,
        "POWERTOOLS_LOG_LEVEL": options.log_level or deployed.log_level,
        # Nothing may come from a model hub at run time, locally as on Lambda.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # ONNX Runtime keeps a telemetry database under HOME (and a lock on it) unless told not to.
        "ORT_DISABLE_TELEMETRY": "1",
    }
    if deployed.threads is not None:
        env["N_THREADS"] = str(deployed.threads)
    if options.api_key:
        env["API_KEY"] = options.api_key
    # The stack sets it on both functions: the handler frames URL answers for the URL's invoke mode.
    env["FUNCTION_URL_INVOKE_MODE"] = _url_invoke_mode(key, deployed, options)
    env.update(options.extra_environment.get(key, {}))
    return env


def _url_invoke_mode(key: FunctionKey, deployed: Deployed, options: LocalOptions) -> UrlInvokeMode:
    # Both are valid already: cdk.json's through stacks.config, the command line's through its choices.
    return options.url_invoke_mode.get(key, deployed.url_invoke_mode)


def _tree_fingerprint(folder: Path) -> str:
    """Names, sizes and modification times of every file under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def onnx_cache_key(model_dir: Path, model_id: str) -> str:
    """Key of an exported model: the model's files, its identity and the exporter's code."""
    digest = hashlib.sha256()
    digest.update(f"{model_dir.resolve()}\0{model_id}\0{_tree_fingerprint(model_dir)}\n".encode())
    for source in sorted(EMBEDDINGS_CODE.rglob("*.py")):
        if "models" not in source.relative_to(EMBEDDINGS_CODE).parts:
            digest.update(str(source.relative_to(EMBEDDINGS_CODE)).encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:20]


def prepare_embeddings_model(
    model_dir: Path, model_id: str, *, echo: Echo = print, cache_root: Path = ONNX_CACHE
) -> Path:
    """The ONNX export of a sentence-transformers folder, made once by the image's exporter and cached."""
    target = cache_root / onnx_cache_key(model_dir, model_id)
    if (target / "embedding_manifest.json").is_file():
        echo(f"embeddings: using the cached ONNX export in {target}")
        return target
    echo(f"embeddings: exporting {model_dir} to ONNX once (cached for later runs)...")
    cache_root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="export-", dir=cache_root))
    command = [
        sys.executable,
        str(EMBEDDINGS_CODE / "export_onnx.py"),
        "--model-dir",
        str(model_dir),
        "--out",
        str(scratch),
        "--model-id",
        model_id,
    ]
    result = subprocess.run(command, cwd=EMBEDDINGS_CODE, capture_output=True, text=True, check=False)
    for line in (result.stdout + result.stderr).splitlines():
        echo(f"[export] {line}")
    if result.returncode != 0:
        shutil.rmtree(scratch, ignore_errors=True)
        raise RuntimeError(f"the ONNX export of {model_dir} failed (exit status {result.returncode})")
    scratch.rename(target)
    return target


def build_plans(
    options: LocalOptions,
    *,
    deployed: dict[FunctionKey, Deployed] | None = None,
    echo: Echo = print,
) -> list[FunctionPlan]:
    """The functions to run, configured as deployed, on the chosen models and ports."""
    deployed = deployed or deployed_settings()
    plans: list[FunctionPlan] = []
    if "llama" in options.selected():
        settings = deployed["llama"]
        model = (options.llama_model or embedded_gguf()).resolve()
        if not model.is_file():
            raise FileNotFoundError(f"--llama-model: no GGUF file at {model}")
        plans.append(
            _plan(
                "llama",
                settings,
                options,
                {"MODEL_PATH": str(model)},
                ports=(options.llama_invoke_port, options.llama_url_port),
                description=f"{model.name} ({model.stat().st_size / 1e6:.0f} MB)",
            )
        )
    if "embeddings" in options.selected():
        settings = deployed["embeddings"]
        backend = options.embeddings_backend or settings.backend
        source = (options.embeddings_model or embedded_embeddings_model()).resolve()
        if not (source / "modules.json").is_file():
            raise FileNotFoundError(
                f"--embeddings-model: {source} is not a sentence-transformers model folder"
            )
        model_id = options.embeddings_model_id or (
            EMBEDDINGS_MODEL_ID if options.embeddings_model is None else source.name
        )
        model_dir = prepare_embeddings_model(source, model_id, echo=echo) if backend == "onnx" else source
        plans.append(
            _plan(
                "embeddings",
                settings,
                options,
                {"MODEL_DIR": str(model_dir), "MODEL_ID": model_id, "BACKEND": backend},
                ports=(options.embeddings_invoke_port, options.embeddings_url_port),
                description=f"{model_id}, {backend} backend",
            )
        )
    return plans


def _plan(
    key: FunctionKey,
    settings: Deployed,
    options: LocalOptions,
    model_environment: dict[str, str],
    *,
    ports: tuple[int, int],
    description: str,
) -> FunctionPlan:
    """One function as deployed (memory, timeout, environment), with the model and ports chosen here."""
    return FunctionPlan(
        key=key,
        spec=FunctionSpec(
            name=key,
            code_dir=IMAGES / key,
            memory_mb=options.memory_mb.get(key, settings.memory_mb),
            timeout_s=options.timeout_s.get(key, settings.timeout_s),
            environment={**_common_environment(key, settings, options), **model_environment},
        ),
        invoke_port=ports[0],
        url_port=ports[1],
        description=description,
        url_invoke_mode=_url_invoke_mode(key, settings, options),
        snap_start=options.snap_start.get(key, settings.snap_start),
    )

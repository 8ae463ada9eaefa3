"""Building the declared image assets with podman, changing only what cannot exist here.

What a user with local models passes to ``cdk synth``/``cdk deploy``:
``local_model_context`` copies the embedded PyPI models into the image folders
(``lambda_images/*/models/``, gitignored) and names them with the
``*_model_local_path`` context keys, and ``TorchIndex`` serves the CPU torch
wheel of ``/opt/wheels`` as a pip index on 127.0.0.1 for the
``embeddings_torch_index_url`` key (download.pytorch.org is unreachable here).

``build_asset`` then runs the asset's own ``docker build`` arguments with
podman in the staged context directory, with one build argument replaced:
``BASE_IMAGE``, the local stand-in. RUN steps use the host's network
(``--network host``) unless the asset declares a network mode: podman's
bridge network needs iptables, and pip refuses plain-HTTP indexes other than
localhost.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from local.models import EMBEDDINGS_MODEL_ID, embedded_embeddings_model, embedded_gguf
from local.rie import wait_for_port
from tests.images.assets import ImageAsset, replaced
from tests.images.podman import ROOT, PodmanError, podman, run_logged

IMAGES_DIR = ROOT / "lambda_images"
WHEELS_DIR = Path("/opt/wheels")
TORCH_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
# A fixed port: the index URL is a build argument, so it is part of the layer cache key.
TORCH_INDEX_PORT = 38503
TAG_PREFIX = "localhost/lambda-llm-inference"


def _copy_if_changed(source: Path, dest: Path) -> None:
    if dest.is_file() and dest.stat().st_size == source.stat().st_size:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, dest)


def local_model_context(images_dir: Path = IMAGES_DIR) -> dict[str, str]:
    """Copy the embedded models into the image folders; return the context keys naming them."""
    gguf = embedded_gguf()
    _copy_if_changed(gguf, images_dir / "llama" / "models" / gguf.name)
    model_dir = embedded_embeddings_model()
    folder = EMBEDDINGS_MODEL_ID.split("/")[-1]
    for source in sorted(p for p in model_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        _copy_if_changed(
            source, images_dir / "embeddings" / "models" / folder / source.relative_to(model_dir)
        )
    return {
        "llama_model_local_path": f"llama/models/{gguf.name}",
        "embeddings_model_local_path": f"embeddings/models/{folder}",
        "embeddings_model_id": EMBEDDINGS_MODEL_ID,
    }


class TorchIndex:
    """A PEP 503 simple index with the one CPU torch wheel, served by ``python -m http.server``."""

    def __init__(self, workdir: Path, wheel: Path | None = None, port: int = TORCH_INDEX_PORT) -> None:
        self.wheel = wheel or WHEELS_DIR / TORCH_WHEEL
        if not self.wheel.is_file():
            raise FileNotFoundError(
                f"{self.wheel} is missing: the embeddings image installs CPU torch from a local index "
                "because download.pytorch.org is unreachable; put the wheel there (CI machines have it)"
            )
        self.root = workdir / "torch-index"
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def _write(self) -> None:
        project = self.root / "torch"
        project.mkdir(parents=True, exist_ok=True)
        link = project / self.wheel.name
        if not link.exists():
            link.symlink_to(self.wheel)
        digest = hashlib.sha256()
        with self.wheel.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        href = urllib.parse.quote(self.wheel.name) + "#sha256=" + digest.hexdigest()
        (project / "index.html").write_text(
            f'<!DOCTYPE html><html><body><a href="{href}">{self.wheel.name}</a></body></html>\n'
        )
        (self.root / "index.html").write_text(
            '<!DOCTYPE html><html><body><a href="torch/">torch</a></body></html>\n'
        )

    def __enter__(self) -> TorchIndex:
        self._write()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(self.root),
             str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            wait_for_port("127.0.0.1", self.port, 10, self.process)
        except (RuntimeError, TimeoutError) as error:
            self.__exit__()
            raise RuntimeError(f"cannot serve the torch index on 127.0.0.1:{self.port}: {error}") from error
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@dataclass(frozen=True)
class Step:
    """One Dockerfile instruction as podman reported it."""

    stage: int
    text: str
    cached: bool


@dataclass(frozen=True)
class BuildResult:
    asset: ImageAsset
    tag: str
    image_id: str
    command: tuple[str, ...]
    seconds: float
    steps: tuple[Step, ...]
    log_path: Path

    def step(self, pattern: str) -> Step:
        """The one step whose instruction matches ``pattern`` (a regular expression)."""
        found = [step for step in self.steps if re.search(pattern, step.text, re.S)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} build steps match {pattern!r}: {[s.text[:80] for s in found]}")
        return found[0]


_STEP = re.compile(r"^\[(\d+)/\d+\] STEP \d+/\d+: (.*)$|^STEP \d+/\d+: (.*)$")


def parse_steps(log: str) -> tuple[Step, ...]:
    """The build's steps and whether podman took each from its layer cache ("Using cache")."""
    steps: list[Step] = []
    current: tuple[int, list[str]] | None = None
    cached = False

    def close() -> None:
        if current is not None:
            steps.append(Step(stage=current[0], text="\n".join(current[1]).strip(), cached=cached))

    for line in log.splitlines():
        match = _STEP.match(line)
        if match:
            close()
            stage = int(match.group(1)) if match.group(1) else 1
            current = (stage, [match.group(2) or match.group(3) or ""])
            cached = False
        elif current is not None and line.startswith("--> Using cache"):
            cached = True
    close()
    return tuple(steps)


def image_tag(asset: ImageAsset) -> str:
    return f"{TAG_PREFIX}/{asset.name}:test"


def build_args_for_test(asset: ImageAsset, base_image: str) -> dict[str, str]:
    """The declared build arguments with BASE_IMAGE replaced by the local stand-in."""
    return replaced(asset.build_args, {"BASE_IMAGE": base_image})


def build_asset(
    asset: ImageAsset,
    *,
    base_image: str,
    log_path: Path,
    context_dir: Path | None = None,
    tag: str | None = None,
    timeout_s: float = 3600,
) -> BuildResult:
    """Build ``asset`` as declared (in ``context_dir``, default its staged directory) with podman."""
    tag = tag or image_tag(asset)
    previous = podman("image", "inspect", "--format", "{{.Id}}", tag, check=False).stdout.strip()
    args = asset.docker_build_args(
        tag,
        build_args=build_args_for_test(asset, base_image),
        network_mode=asset.network_mode or "host",
    )
    command = ("podman", *args)
    started = time.monotonic()
    status = run_logged(command, cwd=context_dir or asset.directory, log_path=log_path, timeout_s=timeout_s)
    seconds = time.monotonic() - started
    log = log_path.read_text()
    if status != 0:
        raise PodmanError(
            f"building the {asset.name} image failed ({status}); log {log_path}:\n{log[-6000:]}"
        )
    image_id = podman("image", "inspect", "--format", "{{.Id}}", tag).stdout.strip()
    if previous and previous != image_id:
        # The replaced image keeps no tag; remove it (its layers shared with the cache stay).
        podman("rmi", previous, check=False)
    return BuildResult(
        asset=asset,
        tag=tag,
        image_id=image_id,
        command=command,
        seconds=seconds,
        steps=parse_steps(log),
        log_path=log_path,
    )


@contextmanager
def copied_context(asset: ImageAsset, dest: Path) -> Iterator[Path]:
    """A copy of the asset's staged context elsewhere (fresh mtimes, another absolute path)."""
    shutil.copytree(asset.directory, dest, symlinks=True)
    for path in dest.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.touch()
    try:
        yield dest
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def synth_context(torch_index_url: str, images_dir: Path = IMAGES_DIR) -> Mapping[str, str]:
    """Every ``-c`` override the image tests synthesize with."""
    return {**local_model_context(images_dir), "embeddings_torch_index_url": torch_index_url}

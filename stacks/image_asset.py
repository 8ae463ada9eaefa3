"""The Docker build context of each image, as CDK stages and hashes it.

Both Dockerfiles build from ``lambda_images/`` so that each can COPY the
shared ``common/`` package. Sending that whole folder would put the other
image's files (and every local model file) into each image's context and its
asset hash, so a change to one image would rebuild both. ``context_excludes``
narrows the context to ``common/`` plus the image's own folder, applies the
image folder's ``.dockerignore`` (written relative to that folder, rebased
here) and re-includes a local model only when the configuration chose one.

Patterns use Docker's .dockerignore rules (CDK's ``IgnoreMode.DOCKER``): they
are anchored at the context root, later patterns win and ``!`` re-includes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from aws_cdk import DockerBuildSecret, IgnoreMode
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_lambda as lambda_

SHARED_FOLDER = "common"
"""The folder both images COPY from, always part of each context."""

ALWAYS_EXCLUDED = (
    "**/__pycache__",
    "**/*.py[cod]",
    "**/.pytest_cache",
    "**/.mypy_cache",
    "**/.ruff_cache",
    "**/.ipynb_checkpoints",
    "**/.DS_Store",
)
"""Interpreter and tool caches anywhere in the context (common/ has no .dockerignore of its own)."""

HF_TOKEN_SECRET_ID = "hf_token"  # noqa: S105 - the secret's name, not a secret
"""The BuildKit secret id the Dockerfiles read a Hugging Face token from."""


def dockerignore_patterns(image_dir: Path) -> list[str]:
    """The patterns of ``image_dir/.dockerignore``, rebased under the image folder's name."""
    ignore_file = image_dir / ".dockerignore"
    if not ignore_file.is_file():
        return []
    patterns = []
    for line in ignore_file.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        body = pattern[1:].strip() if negate else pattern
        rebased = (PurePosixPath(image_dir.name) / body.lstrip("/")).as_posix()
        patterns.append(("!" if negate else "") + rebased)
    return patterns


def context_excludes(images_dir: Path, folder: str, model_local_path: str | None) -> list[str]:
    """Exclude patterns that leave only ``common/`` and ``folder/`` (minus its ignores) in the context.

    ``model_local_path`` (relative to ``images_dir``) is re-included last, so a
    model placed under the otherwise ignored ``models/`` folder is sent.
    """
    patterns = ["*", f"!{SHARED_FOLDER}", f"!{folder}", *ALWAYS_EXCLUDED]
    patterns += dockerignore_patterns(images_dir / folder)
    if model_local_path:
        patterns.append(f"!{model_local_path}")
    return patterns


def image_code(
    *,
    images_dir: Path,
    folder: str,
    build_args: Mapping[str, str],
    platform: str,
    model_local_path: str | None,
    hf_token_file: Path | None,
) -> lambda_.DockerImageCode:
    """Lambda code from ``images_dir/folder/Dockerfile``, built by ``cdk deploy`` (not at synth)."""
    build_secrets = (
        {HF_TOKEN_SECRET_ID: DockerBuildSecret.from_src(str(hf_token_file))}
        if hf_token_file is not None
        else None
    )
    return lambda_.DockerImageCode.from_image_asset(
        str(images_dir),
        file=f"{folder}/Dockerfile",
        build_args=dict(build_args),
        build_secrets=build_secrets,
        platform=ecr_assets.Platform.custom(platform),
        exclude=context_excludes(images_dir, folder, model_local_path),
        ignore_mode=IgnoreMode.DOCKER,
        display_name=f"{folder} image",
    )

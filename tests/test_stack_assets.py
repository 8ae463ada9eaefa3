"""Each image's build context as CDK stages it: only common/ and the image's own folder.

Works on a copy of lambda_images/ so files can be added and changed freely;
the staged directories and asset hashes come from a real synth (no Docker
engine: images are built only by `cdk deploy`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template

from app import IMAGES_DIR, build_app, cdk_json_context
from stacks.image_asset import context_excludes, dockerignore_patterns


def copy_images(target: Path) -> Path:
    """A copy of lambda_images/ without caches or local model files."""

    def skip(folder: str, names: list[str]) -> list[str]:
        skipped = [
            name for name in names if name in ("__pycache__", ".pytest_cache") or name.endswith(".pyc")
        ]
        if Path(folder).name == "models":
            skipped += [name for name in names if name != ".gitkeep"]
        return skipped

    shutil.copytree(IMAGES_DIR, target, ignore=skip)
    return target


class Synth:
    """One synth of the app over a given build context."""

    def __init__(self, images_dir: Path, outdir: Path, overrides: dict[str, Any] | None = None) -> None:
        app, stack = build_app(
            {**cdk_json_context(), **(overrides or {})}, outdir=str(outdir), images_dir=images_dir
        )
        app.synth()
        self.outdir = outdir
        self.template = Template.from_stack(stack)
        self.assets = json.loads((outdir / f"{stack.stack_name}.assets.json").read_text())

    def image(self, folder: str) -> tuple[str, dict[str, Any]]:
        (found,) = [
            (asset_hash, image["source"])
            for asset_hash, image in self.assets["dockerImages"].items()
            if image["displayName"] == f"{folder} image"
        ]
        return found

    def asset_hash(self, folder: str) -> str:
        return self.image(folder)[0]

    def staged_files(self, folder: str) -> set[str]:
        """Files (relative paths) of the staged build context of ``folder``'s image."""
        staged = self.outdir / self.image(folder)[1]["directory"]
        return {path.relative_to(staged).as_posix() for path in staged.rglob("*") if path.is_file()}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build context copy with the clutter a developer's tree accumulates."""
    root = copy_images(tmp_path_factory.mktemp("ctx") / "lambda_images")
    for folder in ("common", "llama", "embeddings"):
        (root / folder / "__pycache__").mkdir(exist_ok=True)
        (root / folder / "__pycache__" / "mod.cpython-311.pyc").write_bytes(b"\0")
    (root / "llama" / "models" / "big.gguf").write_bytes(b"GGUF-local-model")
    (root / "embeddings" / "models" / "my-model").mkdir()
    (root / "embeddings" / "models" / "my-model" / "config.json").write_text("{}")
    (root / "embeddings" / "tests").mkdir()
    (root / "embeddings" / "tests" / "test_x.py").write_text("")
    (root / "README.scratch").write_text("not part of any image")
    return root


@pytest.fixture(scope="module")
def baseline(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Synth:
    return Synth(images, tmp_path_factory.mktemp("out"))


@pytest.mark.parametrize(("folder", "other"), [("llama", "embeddings"), ("embeddings", "llama")])
def test_staged_context_holds_common_and_its_own_folder_only(
    baseline: Synth, images: Path, folder: str, other: str
) -> None:
    # When the app is synthesized
    staged = baseline.staged_files(folder)
    # Then the image's context has its Dockerfile and the whole of common/
    assert f"{folder}/Dockerfile" in staged
    common = {
        p.relative_to(images).as_posix()
        for p in (images / "common").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert common
    assert common <= staged
    # And nothing outside common/ and its own folder: not the other image, not stray files
    assert {path.split("/")[0] for path in staged} == {"common", folder}
    assert not any(path.startswith(f"{other}/") for path in staged)
    # And no caches, tests or local model files
    assert not any("__pycache__" in path or path.endswith(".pyc") for path in staged)
    # (models/ itself is sent, holding only its .gitkeep: the Dockerfile COPYs the folder)
    assert {path for path in staged if path.startswith(f"{folder}/models/")} == {f"{folder}/models/.gitkeep"}
    assert not any("/tests/" in path for path in staged)


def test_a_change_in_one_image_folder_rebuilds_only_that_image(
    baseline: Synth, images: Path, tmp_path: Path
) -> None:
    # Given a copy of the same context where only an embeddings file changed
    changed = copy_images(tmp_path / "lambda_images")
    (changed / "embeddings" / "Dockerfile").write_text(
        (images / "embeddings" / "Dockerfile").read_text() + "\n# edit\n"
    )
    # When synthesized again
    after = Synth(changed, tmp_path / "out")
    # Then only the embeddings asset hash moved
    assert after.asset_hash("llama") == baseline.asset_hash("llama")
    assert after.asset_hash("embeddings") != baseline.asset_hash("embeddings")


def test_a_change_in_common_rebuilds_both(baseline: Synth, images: Path, tmp_path: Path) -> None:
    changed = copy_images(tmp_path / "lambda_images")
    with (changed / "common" / "fetch_model.py").open("a") as handle:
        handle.write("\n# edit\n")
    after = Synth(changed, tmp_path / "out")
    assert after.asset_hash("llama") != baseline.asset_hash("llama")
    assert after.asset_hash("embeddings") != baseline.asset_hash("embeddings")


def test_caches_and_unchosen_models_do_not_change_the_hash(baseline: Synth, tmp_path: Path) -> None:
    # Given the same sources without any of the clutter (caches, model files, tests, stray files)
    clean = copy_images(tmp_path / "lambda_images")
    after = Synth(clean, tmp_path / "out")
    # Then both images hash the same as with the clutter
    assert after.asset_hash("llama") == baseline.asset_hash("llama")
    assert after.asset_hash("embeddings") == baseline.asset_hash("embeddings")


def test_a_chosen_local_model_is_sent_and_named_in_the_build_args(
    baseline: Synth, images: Path, tmp_path: Path
) -> None:
    # When the configuration chooses the local models
    chosen = Synth(
        images,
        tmp_path / "out",
        {
            "llama_model_local_path": "llama/models/big.gguf",
            "embeddings_model_local_path": "embeddings/models/my-model",
        },
    )
    # Then exactly the chosen model is in each context, nothing else from models/ but its .gitkeep
    assert {p for p in chosen.staged_files("llama") if p.startswith("llama/models/")} == {
        "llama/models/.gitkeep",
        "llama/models/big.gguf",
    }
    assert {p for p in chosen.staged_files("embeddings") if p.startswith("embeddings/models/")} == {
        "embeddings/models/.gitkeep",
        "embeddings/models/my-model/config.json",
    }
    # And the build argument names it, and the image is rebuilt
    assert chosen.image("llama")[1]["dockerBuildArgs"]["MODEL_LOCAL_PATH"] == "llama/models/big.gguf"
    assert (
        chosen.image("embeddings")[1]["dockerBuildArgs"]["MODEL_LOCAL_PATH"] == "embeddings/models/my-model"
    )
    assert chosen.asset_hash("llama") != baseline.asset_hash("llama")
    # And the function's description says where its model comes from
    llama = chosen.template.find_resources(
        "AWS::Lambda::Function",
        {"Properties": {"Description": "llama.cpp text generation with llama/models/big.gguf"}},
    )
    assert len(llama) == 1


def test_dockerignore_patterns_are_rebased_under_the_image_folder(tmp_path: Path) -> None:
    # Given an image folder's .dockerignore written relative to that folder
    folder = tmp_path / "llama"
    folder.mkdir()
    (folder / ".dockerignore").write_text("# comment\n\nmodels/*\n/notes\n**/__pycache__\n!keep.txt\n")
    # Then its patterns apply under llama/ in the lambda_images/ context
    assert dockerignore_patterns(folder) == [
        "llama/models/*",
        "llama/notes",
        "llama/**/__pycache__",
        "!llama/keep.txt",
    ]
    # And the full exclude list narrows to common/ + llama/ first, and re-includes the model last
    excludes = context_excludes(tmp_path, "llama", "llama/models/x.gguf")
    assert excludes[:3] == ["*", "!common", "!llama"]
    assert excludes[-1] == "!llama/models/x.gguf"


@pytest.mark.parametrize("folder", ["llama", "embeddings"])
def test_each_image_folder_ignores_models_tests_and_caches(folder: str) -> None:
    patterns = dockerignore_patterns(IMAGES_DIR / folder)
    assert f"{folder}/models/*" in patterns
    assert f"{folder}/**/tests" in patterns
    assert f"{folder}/**/__pycache__" in patterns

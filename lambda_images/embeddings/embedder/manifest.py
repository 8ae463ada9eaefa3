"""What the build-time ONNX export tells the run time about a model.

``export_onnx.py`` reads a sentence-transformers model with sentence-transformers
itself (the reference) and writes its pipeline down here: the ONNX file of the
transformer, the tokenizer, the pooling, whether the model ends in a Normalize
module, the sequence limit and the prompts the model declares. The run time
reads this file and never imports torch or sentence-transformers.

This module is imported at run time: standard library only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_FILE = "embedding_manifest.json"
FORMAT_VERSION = 1
ST_CONFIG_FILE = "config_sentence_transformers.json"

POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
"""The sentence-transformers pooling modes the ONNX pipeline reproduces."""


class ManifestError(ValueError):
    """The manifest is missing, from another format version, or inconsistent."""


@dataclass(frozen=True)
class Manifest:
    model_id: str
    dimension: int
    """Length of the pooled sentence embedding."""
    max_seq_length: int
    """Tokens per input, special tokens included (sentence-transformers' max_seq_length)."""
    pooling_modes: tuple[str, ...]
    include_prompt: bool
    normalize: bool
    """True when the model ends with sentence-transformers' Normalize module."""
    prompts: dict[str, str]
    """Prompts the model itself declares (config_sentence_transformers.json)."""
    default_prompt_name: str | None
    input_names: tuple[str, ...]
    """ONNX inputs, a subset of input_ids, attention_mask, token_type_ids."""
    output_name: str
    pad_token_id: int
    pad_type_id: int
    padding_side: str
    onnx_file: str = "model.onnx"
    tokenizer_file: str = "tokenizer.json"
    quantization: str = "none"
    graph_optimized: bool = False
    """ONNX Runtime's graph optimizations were applied at build time (skip them at load)."""
    similarity_fn_name: str = "cosine"
    model_revision: str = ""
    exported_with: dict[str, str] = field(default_factory=dict)
    verification: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        unknown = [mode for mode in self.pooling_modes if mode not in POOLING_MODES]
        if not self.pooling_modes or unknown:
            raise ManifestError(
                f"unsupported pooling modes {list(self.pooling_modes)}; known: {POOLING_MODES}"
            )
        if self.dimension < 1 or self.max_seq_length < 2:
            raise ManifestError(
                f"implausible dimension {self.dimension} or max_seq_length {self.max_seq_length}"
            )
        if self.padding_side not in ("left", "right"):
            raise ManifestError(f"padding_side must be left or right, got {self.padding_side!r}")
        if "input_ids" not in self.input_names:
            raise ManifestError(f"the ONNX model must take input_ids, it takes {list(self.input_names)}")

    def to_json(self) -> str:
        data = asdict(self)
        data["pooling_modes"] = list(self.pooling_modes)
        data["input_names"] = list(self.input_names)
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def save(self, folder: Path) -> Path:
        path = folder / MANIFEST_FILE
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise ManifestError(
                f"{path} not found: {folder} is not an exported model; run export_onnx.py on the "
                "sentence-transformers folder, or use BACKEND=torch"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(f"{path} has format version {version}; this code reads {FORMAT_VERSION}")
        data["pooling_modes"] = tuple(data["pooling_modes"])
        data["input_names"] = tuple(data["input_names"])
        try:
            return cls(**data)
        except TypeError as exc:
            raise ManifestError(f"{path} does not match this code: {exc}") from None


def declared_prompts(model_dir: Path) -> tuple[dict[str, str], str | None]:
    """Prompts and default prompt name a sentence-transformers folder declares itself.

    Only what the model's own ``config_sentence_transformers.json`` says: the
    empty ``query``/``document`` placeholders sentence-transformers adds in
    memory are not declarations.
    """
    path = model_dir / ST_CONFIG_FILE
    if not path.is_file():
        return {}, None
    config = json.loads(path.read_text(encoding="utf-8"))
    raw = config.get("prompts") or {}
    if not isinstance(raw, dict):
        raise ManifestError(f"{path}: prompts must be an object, got {type(raw).__name__}")
    prompts = {str(name): str(text) for name, text in raw.items() if text}
    default = config.get("default_prompt_name") or None
    return prompts, str(default) if default else None

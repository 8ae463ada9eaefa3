"""The two ways to run a sentence-transformers model, behind one small interface.

``onnx`` (default): the transformer exported to ONNX at build time, run by ONNX
Runtime, with tokenization, pooling and normalization reproduced from the
build-time manifest; no torch in the process. ``torch``: sentence-transformers
itself, for models the exporter refuses. Each is imported only when chosen, so
the ONNX path never pays for importing torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding

from embedder.tokenization import TextTokenizer

BackendName = Literal["onnx", "torch"]
Stop = Callable[[], bool]


class Stopped(Exception):
    """A backend gave up part-way because ``stop`` said so; nothing it computed is returned."""

    def __init__(self, done: int, total: int) -> None:
        super().__init__(f"stopped after {done} of {total} inputs")
        self.done = done
        self.total = total


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded model is, whichever backend runs it."""

    dimension: int
    max_seq_length: int
    pooling: str
    normalize: bool
    """The model ends with a Normalize module (the request's ``normalize`` still decides)."""
    include_prompt: bool
    """Pooling counts the prompt's tokens (sentence-transformers' Pooling.include_prompt)."""
    declared_prompts: dict[str, str]
    declared_default_prompt: str | None
    model_id: str = ""
    """The identity recorded at build time, if any."""
    revision: str = ""
    dtype: str = "float32"
    details: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Inputs ready to embed: the same content as text (torch) and as tokens (onnx)."""

    texts: Sequence[str]
    prompt: str
    encodings: Sequence[Encoding]
    prompt_length: int | None
    """Prompt tokens to leave out of pooling, when the model asks for that."""


class Backend(Protocol):
    name: BackendName
    info: ModelInfo
    tokenizer: TextTokenizer

    def embed(self, batch: Batch, stop: Stop | None = None) -> npt.NDArray[np.float32]:
        """Pooled sentence embeddings (len(batch), info.dimension), before any normalization.

        ``stop`` is asked between runs of the model; when it says so, the backend
        raises ``Stopped`` instead of finishing (the invocation's deadline came).
        """
        ...


def load_backend(
    name: BackendName, model_dir: Path, *, threads: int, max_batch_tokens: int, batch_size: int
) -> Backend:
    if name == "onnx":
        from embedder.backend_onnx import OnnxBackend

        return OnnxBackend(model_dir, threads=threads, max_batch_tokens=max_batch_tokens)
    from embedder.backend_torch import TorchBackend

    return TorchBackend(model_dir, threads=threads, batch_size=batch_size)

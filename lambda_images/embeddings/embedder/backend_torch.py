"""The fallback backend: sentence-transformers itself, on torch (BACKEND=torch).

For models the ONNX exporter refuses (extra modules such as Dense, custom
code). Imports torch and sentence-transformers, which costs seconds of cold
start; see docs/embeddings.md for the figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from embedder.backends import BackendName, Batch, ModelInfo, Stop, Stopped
from embedder.manifest import declared_prompts
from embedder.tokenization import TextTokenizer


class TorchBackend:
    name: BackendName = "torch"

    def __init__(self, model_dir: Path, *, threads: int, batch_size: int) -> None:
        import torch
        from sentence_transformers import SentenceTransformer
        from tokenizers import Tokenizer

        torch.set_num_threads(threads)
        self._torch = torch
        self.model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
        self.model.eval()
        # The request's `normalize` decides normalization, as TEI does: take the
        # model's own Normalize module off the end and apply it on request.
        normalize = type(self.model[-1]).__name__ == "Normalize"
        if normalize:
            del self.model[len(self.model) - 1]
        hf_tokenizer = self.model.tokenizer
        if hf_tokenizer is None or not getattr(hf_tokenizer, "is_fast", False):
            raise RuntimeError(f"{model_dir}: the model has no fast tokenizer to count and limit tokens with")
        if self.model.max_seq_length is None:
            raise RuntimeError(f"{model_dir}: sentence-transformers reports no max_seq_length")
        max_seq_length = int(self.model.max_seq_length)
        # A copy: transformers keeps changing the padding/truncation state of its own.
        self.tokenizer = TextTokenizer(
            Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str()), max_seq_length
        )
        self.batch_size = batch_size
        prompts, default_prompt = declared_prompts(model_dir)
        pooling = next((module for module in self.model if type(module).__name__ == "Pooling"), None)
        modes = getattr(pooling, "pooling_mode", "n/a")
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise RuntimeError(f"{model_dir}: sentence-transformers reports no embedding dimension")
        self.info = ModelInfo(
            dimension=int(dimension),
            max_seq_length=max_seq_length,
            pooling=modes if isinstance(modes, str) else "+".join(modes),
            normalize=normalize,
            include_prompt=bool(getattr(pooling, "include_prompt", True)),
            declared_prompts=prompts,
            declared_default_prompt=default_prompt,
            details={
                "modules": [type(module).__name__ for module in self.model],
                "torch": torch.__version__,
            },
        )

    def embed(self, batch: Batch, stop: Stop | None = None) -> npt.NDArray[np.float32]:
        texts = list(batch.texts)
        parts = []
        with self._torch.inference_mode():
            # One encode call per batch, so the deadline is looked at between them.
            for start in range(0, len(texts), self.batch_size):
                if start and stop is not None and stop():
                    raise Stopped(start, len(texts))
                vectors = self.model.encode(
                    texts[start : start + self.batch_size],
                    prompt=batch.prompt or None,
                    batch_size=self.batch_size,
                    normalize_embeddings=False,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                parts.append(np.asarray(vectors, dtype=np.float32))
        return np.concatenate(parts) if parts else np.empty((0, self.info.dimension), dtype=np.float32)

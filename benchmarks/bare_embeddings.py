"""The embedding model run with the bare libraries, no handler: the baseline the handler is compared with.

``onnx``: an ONNX Runtime session on the exported model with the session
options the handler uses, the ``tokenizers`` tokenizer, mean or CLS pooling
and L2 normalization in NumPy. ``torch``: ``SentenceTransformer.encode``.

Run as a script it is the bare cold-start probe: it imports, loads, embeds one
text and prints one JSON line::

    python -m benchmarks.bare_embeddings MODEL_DIR --backend onnx --threads 1 --text "hello"
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MANIFEST = "embedding_manifest.json"


class BareOnnx:
    name = "onnx"

    def __init__(self, model_dir: Path, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.manifest: dict[str, Any] = json.loads((model_dir / MANIFEST).read_text())
        modes = list(self.manifest["pooling_modes"])
        if modes not in (["mean"], ["cls"]):
            raise ValueError(
                f"the bare ONNX pipeline pools mean or cls only, not {modes}: use --embeddings-backend torch"
            )
        self.pooling = modes[0]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        if self.manifest.get("graph_optimized"):
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(
            str(model_dir / self.manifest["onnx_file"]), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / self.manifest["tokenizer_file"]))
        self.tokenizer.enable_truncation(max_length=int(self.manifest["max_seq_length"]))
        self.tokenizer.enable_padding(
            pad_id=int(self.manifest["pad_token_id"]),
            pad_type_id=int(self.manifest["pad_type_id"]),
            direction=str(self.manifest["padding_side"]),
        )
        self.max_seq_length = int(self.manifest["max_seq_length"])

    def count_tokens(self, text: str) -> int:
        self.tokenizer.no_truncation()
        try:
            return len(self.tokenizer.encode(text).ids)
        finally:
            self.tokenizer.enable_truncation(max_length=self.max_seq_length)

    def embed(self, texts: Sequence[str]) -> Any:
        import numpy as np

        encodings = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        feeds = {name: available[name] for name in self.manifest["input_names"]}
        (hidden,) = self.session.run([self.manifest["output_name"]], feeds)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask[:, :, None].astype(np.float32)
            pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)


class BareTorch:
    name = "torch"

    def __init__(self, model_dir: Path, threads: int, batch_size: int = 32) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(threads)
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.batch_size = batch_size
        self.max_seq_length = int(self.model.max_seq_length or 512)

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer(text)["input_ids"])

    def embed(self, texts: Sequence[str]) -> Any:
        return self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True)


def load(backend: str, model_dir: Path, threads: int) -> BareOnnx | BareTorch:
    if backend == "onnx":
        return BareOnnx(model_dir, threads)
    if backend == "torch":
        return BareTorch(model_dir, threads)
    raise ValueError(f"unknown backend {backend!r}: onnx or torch")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bare cold-start probe: load the model, embed one text.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--backend", default="onnx")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--text", default="hello world")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = load(args.backend, args.model_dir, args.threads)
    loaded = time.perf_counter()
    vectors = model.embed([args.text])
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "dimension": len(vectors[0]),
                "load_ms": (loaded - started) * 1000,
                "embed_ms": (done - loaded) * 1000,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

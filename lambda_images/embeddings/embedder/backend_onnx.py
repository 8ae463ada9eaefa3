"""The default backend: the exported transformer under ONNX Runtime, no torch.

Loads what ``export_onnx.py`` wrote (manifest, ONNX file, tokenizer) and runs
the sentence-transformers pipeline the manifest describes: batches sorted by
length and capped in padded tokens, the transformer in ONNX Runtime, pooling
in NumPy. The build verified this very code against SentenceTransformer.encode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Encoding

from embedder.backends import BackendName, Batch, ModelInfo, Stop, Stopped
from embedder.manifest import Manifest
from embedder.pooling import pool
from embedder.tokenization import TextTokenizer


class OnnxBackend:
    name: BackendName = "onnx"

    def __init__(self, model_dir: Path, *, threads: int, max_batch_tokens: int) -> None:
        self.manifest = manifest = Manifest.load(model_dir)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # The exporter stores the graph already optimized; optimizing again at
        # every cold start would only repeat that work.
        if manifest.graph_optimized:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(
            str(model_dir / manifest.onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self.tokenizer = TextTokenizer.from_file(
            str(model_dir / manifest.tokenizer_file), manifest.max_seq_length
        )
        self.max_batch_tokens = max_batch_tokens
        self.threads = threads
        self.info = ModelInfo(
            dimension=manifest.dimension,
            max_seq_length=manifest.max_seq_length,
            pooling="+".join(manifest.pooling_modes),
            normalize=manifest.normalize,
            include_prompt=manifest.include_prompt,
            declared_prompts=dict(manifest.prompts),
            declared_default_prompt=manifest.default_prompt_name,
            model_id=manifest.model_id,
            revision=manifest.model_revision,
            dtype="int8" if manifest.quantization == "int8" else "float32",
            details={"quantization": manifest.quantization, "onnxruntime": ort.__version__},
        )

    def embed(self, batch: Batch, stop: Stop | None = None) -> npt.NDArray[np.float32]:
        encodings = batch.encodings
        count = len(encodings)
        result = np.empty((count, self.manifest.dimension), dtype=np.float32)
        order = sorted(range(count), key=lambda i: -len(encodings[i].ids))
        start = 0
        while start < count:
            if start and stop is not None and stop():
                raise Stopped(start, count)
            longest = len(encodings[order[start]].ids)
            size = max(1, min(count - start, self.max_batch_tokens // longest))
            chunk = order[start : start + size]
            feeds, mask = self._pad([encodings[i] for i in chunk], longest)
            (hidden,) = self.session.run([self.manifest.output_name], feeds)
            result[chunk] = pool(hidden, mask, self.manifest.pooling_modes, prompt_length=batch.prompt_length)
            start += size
        return result

    def _pad(
        self, encodings: Sequence[Encoding], width: int
    ) -> tuple[dict[str, npt.NDArray[np.int64]], npt.NDArray[np.int64]]:
        rows = len(encodings)
        ids = np.full((rows, width), self.manifest.pad_token_id, dtype=np.int64)
        types = np.full((rows, width), self.manifest.pad_type_id, dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        left = self.manifest.padding_side == "left"
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            span = slice(width - length, width) if left else slice(0, length)
            ids[row, span] = encoding.ids
            types[row, span] = encoding.type_ids
            mask[row, span] = 1
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return {name: available[name] for name in self.manifest.input_names}, mask

"""Build-time export of a sentence-transformers model for the ONNX backend.

    python export_onnx.py --model-dir /opt/st-model --out /opt/model \\
        --model-id intfloat/multilingual-e5-small [--revision main] [--quantize none|int8]

sentence-transformers stays the reference: the model is loaded with
SentenceTransformer, its modules are read (Transformer -> Pooling -> optional
Normalize; anything else is refused with a message that points at
BACKEND=torch), the transformer is exported with ``torch.onnx.export``, and the
run-time pipeline (``backend_onnx.py``: tokenizer, ONNX Runtime, NumPy pooling)
is run on sample texts and must reproduce ``SentenceTransformer.encode``
within a tight tolerance, or the build fails. The output folder holds
model.onnx, tokenizer.json and embedding_manifest.json, nothing that needs
torch to read.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLE_TEXTS = [
    "First text",
    "Second text",
    "How much protein should a female eat?",
    "As a general guideline, the average requirement of protein for women ages 19 to 70 is 46 grams per day.",
    "Das ist ein deutscher Satz über das Wetter in Berlin.",
    "東京は日本の首都です。",
    "x",
    "   spaces   around   ",
    "Émigré café naïve façade, résumé: déjà vu!",
]
TOLERANCE_COSINE = {"none": 0.99999, "int8": 0.99}
TOLERANCE_ABS = {"none": 1e-4, "int8": None}


class ExportRefused(SystemExit):
    """A model this exporter cannot reproduce faithfully: use BACKEND=torch for it."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"cannot export this model to ONNX: {reason}.\n"
            "Build the image with --build-arg BACKEND=torch to serve it with sentence-transformers itself."
        )


def _long_text(words: int) -> str:
    vocabulary = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "embeddings",
        "capture",
        "meaning",
    ]
    return " ".join(vocabulary[i % len(vocabulary)] for i in range(words))


def _read_pipeline(st: Any) -> dict[str, Any]:
    """The parts of the sentence-transformers pipeline the ONNX backend reproduces, or refuse."""
    names = [type(module).__name__ for module in st]
    if (
        len(names) not in (2, 3)
        or names[:2] != ["Transformer", "Pooling"]
        or names[2:] not in ([], ["Normalize"])
    ):
        raise ExportRefused(f"modules are {names}; supported: Transformer, Pooling and optionally Normalize")
    transformer, pooling = st[0], st[1]
    expected = {"text": {"method": "forward", "method_output_name": "last_hidden_state"}}
    if transformer.modality_config != expected or transformer.module_output_name != "token_embeddings":
        raise ExportRefused(f"the Transformer module's modality config is {transformer.modality_config}")
    if transformer.transformer_task != "feature-extraction":
        raise ExportRefused(f"transformer task {transformer.transformer_task!r} is not feature-extraction")
    if transformer.query_expansion or transformer.query_length or transformer.document_length:
        raise ExportRefused("query expansion or per-task lengths are configured")
    if transformer.processing_kwargs:
        raise ExportRefused(f"custom processing kwargs {transformer.processing_kwargs}")
    if len(names) == 3:
        normalize = st[2]
        if (normalize.module_input_name, normalize.module_output_name) != ("sentence_embedding",) * 2:
            raise ExportRefused("the Normalize module does not act on the sentence embedding")
    tokenizer = transformer.tokenizer
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ExportRefused("the model has no fast (tokenizers) tokenizer")
    modes = (pooling.pooling_mode,) if isinstance(pooling.pooling_mode, str) else tuple(pooling.pooling_mode)
    forward_params = set(inspect.signature(transformer.model.forward).parameters)
    input_names = tuple(
        name
        for name in ("input_ids", "attention_mask", "token_type_ids")
        if name in tokenizer.model_input_names and name in forward_params
    )
    return {
        "transformer": transformer,
        "tokenizer": tokenizer,
        "pooling_modes": modes,
        "include_prompt": bool(pooling.include_prompt),
        "normalize": len(names) == 3,
        "dimension": int(st.get_embedding_dimension()),
        "max_seq_length": int(st.max_seq_length),
        "input_names": input_names,
    }


def _export_transformer(transformer: Any, tokenizer: Any, input_names: tuple[str, ...], path: Path) -> None:
    import torch

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, model: torch.nn.Module) -> None:
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            outputs = self.model(**dict(zip(input_names, inputs, strict=True)), return_dict=True)
            hidden: torch.Tensor = outputs.last_hidden_state
            return hidden

    sample = tokenizer(
        ["a short one", "and a somewhat longer second sample text"], padding=True, return_tensors="pt"
    )
    args = tuple(sample[name] for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["token_embeddings"] = {0: "batch", 1: "sequence"}
    wrapper = TokenEmbeddings(transformer.model).eval()
    with torch.inference_mode():
        torch.onnx.export(
            wrapper,
            args,
            str(path),
            input_names=list(input_names),
            output_names=["token_embeddings"],
            dynamic_axes=axes,
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )


def _optimize(source: Path, dest: Path) -> None:
    """Apply ONNX Runtime's hardware-independent graph optimizations once, at build time."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dest)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _save_with_external_data(source: Path, out: Path) -> None:
    """Graph in model.onnx, weights in model.onnx.data.

    ONNX Runtime memory-maps an external data file instead of parsing the
    weights out of the protobuf and copying them: measured on the
    multilingual-e5-small shape, session creation drops from about 0.75 s to
    0.12 s of CPU and resident memory from 870 MB to 210 MB, and the
    250k-row embedding table is read only where tokens touch it.
    """
    import onnx

    for stale in (out / "model.onnx", out / "model.onnx.data"):
        stale.unlink(missing_ok=True)
    model = onnx.load(str(source))
    onnx.save_model(
        model,
        str(out / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=1024,
    )


def _quantize_int8(source: Path, dest: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(dest), weight_type=QuantType.QInt8)


def _verify(st: Any, out: Path, quantization: str) -> dict[str, Any]:
    """Run the shipped ONNX pipeline against SentenceTransformer.encode; raise SystemExit on mismatch."""
    import numpy as np
    import torch

    from embedder.backend_onnx import OnnxBackend
    from embedder.backends import Batch
    from embedder.pooling import l2_normalize

    backend = OnnxBackend(out, threads=1, max_batch_tokens=4096)
    hf_tokenizer = st[0].tokenizer
    long_text = _long_text(2 * backend.info.max_seq_length)
    texts = [*SAMPLE_TEXTS, long_text]

    # The Rust tokenizer alone must produce the ids transformers' wrapper produces.
    for text in texts:
        expected = hf_tokenizer(text, truncation=True, max_length=backend.info.max_seq_length)["input_ids"]
        fitted = backend.tokenizer.fit([text], truncate=True)
        if list(fitted.encodings[0].ids) != list(expected):
            raise SystemExit(
                f"tokenizer mismatch on {text[:40]!r}: {fitted.encodings[0].ids[:12]} vs {expected[:12]}"
            )

    prompts: list[str] = ["", *sorted({p for p in backend.info.declared_prompts.values() if p}), "query: "]
    worst_cos, worst_abs = 1.0, 0.0
    for prompt in prompts:
        fitted = backend.tokenizer.fit(texts, prompt, truncate=True)
        prompt_length = None
        if prompt and not backend.manifest.include_prompt:
            prompt_length = backend.tokenizer.prompt_length(prompt)
        batch = Batch(fitted.texts, prompt, fitted.encodings, prompt_length)
        ours = l2_normalize(backend.embed(batch))
        # One input per run too: no padding, the common request.
        for row, (text, encoding) in enumerate(zip(fitted.texts, fitted.encodings, strict=True)):
            alone = l2_normalize(backend.embed(Batch([text], prompt, [encoding], prompt_length)))
            worst_single = float(np.sum(alone[0] * ours[row]))
            if worst_single < TOLERANCE_COSINE[quantization]:
                raise SystemExit(f"the ONNX model embeds {text[:40]!r} differently alone and in a batch")
        reference = st.encode(
            texts, prompt=prompt or None, batch_size=4, normalize_embeddings=True, show_progress_bar=False
        )
        cos = float(np.min(np.sum(ours * reference, axis=1)))
        abs_diff = float(np.max(np.abs(ours - reference)))
        worst_cos, worst_abs = min(worst_cos, cos), max(worst_abs, abs_diff)
        # The un-normalized pooled output too (what normalize=false returns).
        with torch.inference_mode():
            features = st.preprocess(texts, prompt=prompt or None)
            pooled = st[1](st[0](features))["sentence_embedding"].numpy()
        pooled_cos = float(np.min(np.sum(l2_normalize(backend.embed(batch)) * l2_normalize(pooled), axis=1)))
        worst_cos = min(worst_cos, pooled_cos)
    min_cos = TOLERANCE_COSINE[quantization]
    max_abs = TOLERANCE_ABS[quantization]
    report = {
        "texts": len(texts),
        "prompts": prompts,
        "min_cosine": round(worst_cos, 7),
        "max_abs_diff": round(worst_abs, 7),
        "required_min_cosine": min_cos,
        "required_max_abs_diff": max_abs,
    }
    if worst_cos < min_cos or (max_abs is not None and worst_abs > max_abs):
        raise SystemExit(
            f"the ONNX pipeline does not reproduce SentenceTransformer.encode: {json.dumps(report)}. "
            "Use --build-arg BACKEND=torch for this model."
        )
    return report


def export(
    model_dir: Path,
    out: Path,
    *,
    model_id: str,
    revision: str = "",
    quantization: str = "none",
    optimize: bool = True,
) -> Path:
    import onnxruntime
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    from embedder.manifest import Manifest, declared_prompts

    started = time.perf_counter()
    st = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    st.eval()
    pipeline = _read_pipeline(st)
    prompts, default_prompt = declared_prompts(model_dir)
    if default_prompt and default_prompt not in prompts:
        raise SystemExit(
            f"{model_dir}: default_prompt_name {default_prompt!r} is not among prompts {list(prompts)}"
        )
    tokenizer = pipeline["tokenizer"]

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        raw = Path(scratch) / "raw.onnx"
        _export_transformer(pipeline["transformer"], tokenizer, pipeline["input_names"], raw)
        current = raw
        if quantization == "int8":
            quantized = Path(scratch) / "int8.onnx"
            _quantize_int8(current, quantized)
            current = quantized
        if optimize:
            optimized = Path(scratch) / "optimized.onnx"
            _optimize(current, optimized)
            current = optimized
        _save_with_external_data(current, out)

    # The tokenizer exactly as sentence-transformers configured it (lower-casing
    # included), without the padding/truncation state of its last call.
    from tokenizers import Tokenizer

    backend_tokenizer = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    backend_tokenizer.no_padding()
    backend_tokenizer.no_truncation()
    backend_tokenizer.save(str(out / "tokenizer.json"))

    manifest = Manifest(
        model_id=model_id,
        model_revision=revision,
        dimension=pipeline["dimension"],
        max_seq_length=pipeline["max_seq_length"],
        pooling_modes=pipeline["pooling_modes"],
        include_prompt=pipeline["include_prompt"],
        normalize=pipeline["normalize"],
        prompts=prompts,
        default_prompt_name=default_prompt,
        input_names=pipeline["input_names"],
        output_name="token_embeddings",
        pad_token_id=int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0),
        pad_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        padding_side=str(tokenizer.padding_side),
        quantization=quantization,
        similarity_fn_name=str(st.similarity_fn_name),
        exported_with={
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        graph_optimized=optimize,
    )
    manifest.save(out)
    for path in out.iterdir():
        path.chmod(0o644)  # the function runs as a non-root user; onnx writes 0600
    report = _verify(st, out, quantization)
    manifest = Manifest(**{**manifest.__dict__, "verification": report})
    path = manifest.save(out)
    size_mb = sum(path.stat().st_size for path in out.glob("model.onnx*")) / 1e6
    print(
        f"exported {model_id} to {out} ({size_mb:.0f} MB, quantization {quantization}) in "
        f"{time.perf_counter() - started:.1f} s; verified against SentenceTransformer.encode: "
        f"min cosine {report['min_cosine']}, max abs diff {report['max_abs_diff']}",
        file=sys.stderr,
    )
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="sentence-transformers model folder")
    parser.add_argument("--out", required=True, type=Path, help="folder to write the exported model into")
    parser.add_argument("--model-id", required=True, help="model identity recorded in the manifest")
    parser.add_argument("--revision", default="", help="model revision recorded in the manifest")
    parser.add_argument("--quantize", choices=["none", "int8"], default="none", help="dynamic int8 weights")
    parser.add_argument("--no-optimize", action="store_true", help="skip build-time graph optimization")
    args = parser.parse_args(argv)
    export(
        args.model_dir,
        args.out,
        model_id=args.model_id,
        revision=args.revision,
        quantization=args.quantize,
        optimize=not args.no_optimize,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""sentence-transformers' Pooling module, in NumPy, for the ONNX backend.

Same arithmetic as ``sentence_transformers...modules.pooling.Pooling`` on padded
batches: the modes are computed in the order given and concatenated, a prompt
can be excluded from the pooled tokens (``include_prompt=False``), and padding
may be on either side. ``tests/test_embeddings_pooling.py`` checks every mode
against the real module.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


def exclude_prompt(attention_mask: IntArray, prompt_length: int) -> IntArray:
    """A copy of the mask with the first ``prompt_length`` real tokens of each row zeroed."""
    mask = attention_mask.copy()
    first_real = mask.argmax(axis=1)  # 0 unless the row is left-padded
    positions = np.arange(mask.shape[1])[None, :]
    mask[positions < (first_real + prompt_length)[:, None]] = 0
    return mask


def pool(
    token_embeddings: FloatArray,
    attention_mask: IntArray,
    modes: Sequence[str],
    *,
    prompt_length: int | None = None,
) -> FloatArray:
    """Sentence embeddings (batch, len(modes) * hidden) from token embeddings (batch, seq, hidden)."""
    original_mask = attention_mask
    mask = exclude_prompt(attention_mask, prompt_length) if prompt_length else attention_mask
    maskf = mask[:, :, None].astype(token_embeddings.dtype)
    outputs: list[FloatArray] = []
    for mode in modes:
        if mode == "cls":
            first = mask.argmax(axis=1)
            outputs.append(token_embeddings[np.arange(len(first)), first])
        elif mode == "max":
            masked = np.where(maskf > 0, token_embeddings, -np.inf)
            outputs.append(masked.max(axis=1).astype(token_embeddings.dtype))
        elif mode in ("mean", "mean_sqrt_len_tokens"):
            summed = (token_embeddings * maskf).sum(axis=1)
            counts = np.clip(maskf.sum(axis=1), 1e-9, None)
            denominator = counts if mode == "mean" else np.sqrt(counts)
            outputs.append((summed / denominator).astype(token_embeddings.dtype))
        elif mode == "weightedmean":
            weights = np.arange(1, token_embeddings.shape[1] + 1, dtype=token_embeddings.dtype)[None, :, None]
            weights = weights - original_mask.argmax(axis=1).astype(token_embeddings.dtype)[:, None, None]
            weighted = maskf * weights
            summed = (token_embeddings * weighted).sum(axis=1)
            outputs.append(
                (summed / np.clip(weighted.sum(axis=1), 1e-9, None)).astype(token_embeddings.dtype)
            )
        elif mode == "lasttoken":
            seq_len = mask.shape[1]
            flipped = mask[:, ::-1]
            from_end = flipped.argmax(axis=1)
            from_end = np.where(flipped.max(axis=1) == 0, seq_len - 1, from_end)
            last = seq_len - from_end - 1
            outputs.append((token_embeddings * maskf)[np.arange(len(last)), last])
        else:
            raise ValueError(f"unknown pooling mode {mode!r}")
    return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=-1)


def l2_normalize(vectors: FloatArray) -> FloatArray:
    """Unit-length rows, as torch.nn.functional.normalize (eps 1e-12)."""
    norms: FloatArray = np.linalg.norm(vectors, axis=-1, keepdims=True)
    normalized: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return normalized

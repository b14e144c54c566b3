"""The report figures: confusion matrix maths, label order, and that the PNGs are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medner_udf.evaluation.plots import confusion_matrix, plot_confusion, plot_type_histogram
from medner_udf.evaluation.report import confusion_labels
from medner_udf.evaluation.scoring import token_label_pairs
from medner_udf.text.types import Span

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_token_label_pairs_strip_prefixes_and_flatten() -> None:
    text = "severe chest pain now"
    gold = [Span(0, 17, "Sign_symptom"), Span(7, 12, "Biological_structure")]  # nested: outer kept
    pred = [Span(7, 12, "Biological_structure"), Span(18, 21, "Time")]
    assert token_label_pairs(text, gold, pred) == [
        ("Sign_symptom", "O"),
        ("Sign_symptom", "Biological_structure"),
        ("Sign_symptom", "O"),
        ("O", "Time"),
    ]


def test_confusion_matrix_is_row_normalised() -> None:
    pairs = [("A", "A"), ("A", "A"), ("A", "B"), ("A", "O"), ("O", "O"), ("O", "B")]
    labels = ["A", "B", "O"]
    m = confusion_matrix(pairs, labels)
    np.testing.assert_allclose(m, [[0.5, 0.25, 0.25], [0.0, 0.0, 0.0], [0.0, 0.5, 0.5]])


def test_confusion_matrix_rejects_unknown_labels() -> None:
    with pytest.raises(ValueError, match="'C'"):
        confusion_matrix([("A", "C")], ["A", "O"])


def test_confusion_labels_by_gold_frequency_with_o_last() -> None:
    pairs = [("O", "O")] * 5 + [("B", "B")] * 3 + [("A", "A")] * 2 + [("O", "Z"), ("O", "C"), ("O", "C")]
    assert confusion_labels(pairs) == ["B", "A", "C", "Z", "O"]


def test_plot_confusion_writes_png_and_checks_shape(tmp_path: Path) -> None:
    labels = ["A", "B", "O"]
    path = plot_confusion(np.eye(3), labels, tmp_path / "sub" / "c.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match=r"shape \(2, 2\) does not match 3 labels"):
        plot_confusion(np.eye(2), labels, tmp_path / "d.png")


def test_plot_type_histogram(tmp_path: Path) -> None:
    path = plot_type_histogram({"Age": 3, "Sex": 10, "Mass": 0}, tmp_path / "h.png", "types")
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="empty"):
        plot_type_histogram({}, tmp_path / "e.png", "none")
    with pytest.raises(ValueError, match="-1"):
        plot_type_histogram({"Age": -1}, tmp_path / "e.png", "bad")

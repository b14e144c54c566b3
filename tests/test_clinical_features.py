"""The shared machinery of the clinical models: keys, the feature index, notes as arrays, scoring."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medner_udf.clinical.features import (
    FeatureIndex,
    FeatureRows,
    LinearModel,
    Note,
    Vocabulary,
    bucket,
    compose,
    word_form,
)
from medner_udf.text.types import Span


def test_compose_keeps_templates_and_fields_apart() -> None:
    a = compose(1, (np.array([3]), 7), (np.array([5]), 7))
    b = compose(1, (np.array([5]), 7), (np.array([3]), 7))
    c = compose(2, (np.array([3]), 7), (np.array([5]), 7))
    assert len({int(a[0]), int(b[0]), int(c[0])}) == 3
    assert int(a[0]) == (1 << 56) | 3 | (5 << 7)


def test_compose_refuses_too_many_bits() -> None:
    with pytest.raises(ValueError, match="bits"):
        compose(1, (np.array([1]), 40), (np.array([1]), 20))


def test_bucket_upper_edges_are_inclusive() -> None:
    assert bucket(np.array([0, 1, 2, 3, 4, 5, 9]), [0, 1, 2, 4]).tolist() == [0, 1, 2, 3, 3, 4, 4]


def test_feature_index_finds_known_keys_and_drops_rare_ones() -> None:
    index = FeatureIndex.fit(np.array([7, 3, 7, 9, 3, 3]), min_count=2)
    assert index.keys.tolist() == [3, 7]
    assert index.columns(np.array([7, 4, 3, 100])).tolist() == [1, -1, 0, -1]


def test_word_form_lowercases_and_folds_digits() -> None:
    assert word_form("CT2") == "ct0" and word_form("142") == "000"


def test_note_sentences_split_at_line_breaks_and_capitalised_stops() -> None:
    text = "No fever. Cough was 3.5 days.\nCT clear"
    words = Vocabulary(["no", "fever"])
    labels = Vocabulary(["Sign_symptom"], reserved=0)
    note = Note.build(text, [Span(3, 8, "Sign_symptom"), Span(10, 15, "Other")], words, labels)
    # tokens: No fever . Cough was 3 . 5 days . | CT clear
    assert note.sentence.tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2]
    assert note.first.tolist() == [1, 3] and note.last.tolist() == [2, 4]
    assert note.labels.tolist() == [0, -1]
    assert note.words[:2].tolist() == [2, 3]


def test_linear_model_scores_by_hand() -> None:
    # Two rows: row 0 has keys 10 and 20 (20 twice: a repeated feature counts twice), row 1 only an
    # unknown key 99 and a missing slot.
    index = FeatureIndex(np.array([10, 20]))
    weights = np.array([[1.0, 0.0], [0.0, 0.5]], dtype=np.float32)
    model = LinearModel(index, weights, np.array([0.0, 0.25], dtype=np.float32))
    rows = FeatureRows(2)
    rows.add(np.array([[10, 20], [99, 10]]), np.array([[True, True], [True, False]]))
    rows.add(np.array([20, 99]))
    probs = model.probabilities(rows)
    # row 0: scores (1.0, 0.25 + 0.5 + 0.5); row 1: the bias alone.
    expected0 = 1 / (1 + math.exp(1.25 - 1.0))
    expected1 = 1 / (1 + math.exp(0.25))
    assert probs[0, 0] == pytest.approx(expected0, abs=1e-6)
    assert probs[1, 0] == pytest.approx(expected1, abs=1e-6)
    assert probs.sum(axis=1) == pytest.approx([1.0, 1.0])


def test_linear_model_checks_its_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        LinearModel(
            FeatureIndex(np.array([1, 2])), np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)
        )

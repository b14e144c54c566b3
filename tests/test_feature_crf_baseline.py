"""The feature-CRF baseline: features, and that it can learn (overfit) a handful of sentences."""

from __future__ import annotations

from pathlib import Path

import pytest

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import read_corpus
from medner_udf.evaluation.feature_crf import (
    predict_docs,
    sentence_features,
    short_shape,
    train_feature_crf,
    word_shape,
)
from medner_udf.evaluation.scoring import score_spans


@pytest.mark.parametrize(
    ("word", "shape", "short"),
    [
        ("Aspirin", "Xxxxxxx", "Xx"),
        ("120", "ddd", "d"),
        ("IgG", "XxX", "XxX"),
        ("µg", "xx", "x"),
        ("/", "/", "/"),
    ],
)
def test_word_shapes(word: str, shape: str, short: str) -> None:
    assert word_shape(word) == shape
    assert short_shape(word) == short


def test_sentence_features_cover_neighbours_and_edges() -> None:
    feats = sentence_features(["Fever", "of", "39", "C"])
    assert len(feats) == 4
    first, third = feats[0], feats[2]
    assert first["word"] == "Fever" and first["lower"] == "fever" and first["istitle"] == 1.0
    assert first["-1:edge"] == "BOS" and first["-2:edge"] == "BOS"
    assert first["+1:word"] == "of" and first["+2:word"] == "39"
    assert third["isdigit"] == 1.0 and third["shape"] == "dd"
    assert third["-2:word"] == "Fever" and third["+1:word"] == "C" and third["+2:edge"] == "EOS"
    assert third["suf3"] == "39" and third["pre2"] == "39"
    assert sentence_features([]) == []


def test_overfits_a_few_sentences(tiny_corpus: Path) -> None:
    docs = read_corpus(tiny_corpus)
    sentences, _ = to_sentences(docs)
    model = train_feature_crf(sentences, c1=0.0, c2=0.001, max_iterations=100)
    pred = predict_docs(model, docs)
    assert sorted(pred) == ["1001", "1002", "1003", "1004"]
    assert pred["1004"] == []
    scores = score_spans({d.doc_id: d.mentions for d in docs}, pred)
    assert scores.strict.f1 == 1.0, scores.strict


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c1": -1.0}, "c1 and c2 must be >= 0, got c1=-1.0"),
        ({"max_iterations": 0}, "max_iterations must be >= 1, got 0"),
    ],
)
def test_rejects_bad_arguments(tiny_corpus: Path, kwargs: dict[str, float], message: str) -> None:
    sentences, _ = to_sentences(read_corpus(tiny_corpus))
    with pytest.raises(ValueError, match=message):
        train_feature_crf(sentences, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        train_feature_crf([])

"""The assertion model's cue and scope features (feature set 2): which cue each mention sees, when a
terminator or a sentence end cuts the scope, and that artifacts of feature set 1 load unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medner_udf.clinical.assertion import AssertionClassifier
from medner_udf.clinical.assertion_features import (
    LABEL_BITS,
    WORD_BITS,
    AssertionFeatures,
    CueWords,
    assertion_features,
)
from medner_udf.clinical.base import load_clinical
from medner_udf.clinical.features import Note, Vocabulary, compose
from medner_udf.corpus.maccrobat import Document
from medner_udf.text.types import Span
from medner_udf.training.clinical import LinearFit, train_assertion

WORDS = Vocabulary(
    [
        "she",
        "denied",
        "had",
        "fever",
        "chills",
        "cough",
        "or",
        ",",
        ".",
        "but",
        "no",
        "rash",
        "resolved",
        "the",
    ]
)
LABELS = Vocabulary(["Sign_symptom"], reserved=0)
SCOPE = AssertionFeatures(scope_window=20)
CUE, BETWEEN, KIND_LABEL = (
    12,
    14,
    19,
)  # templates: (side, cue word, blocked), with mentions between, kind x label
LEFT, RIGHT = 0, 1  # sides
FIT = LinearFit(c=10.0, min_feature_count=1, min_word_count=1)


def _mentions(text: str, *words: str) -> list[Span]:
    spans, start = [], 0
    for w in words:
        begin = text.index(w, start)
        spans.append(Span(begin, begin + len(w), "Sign_symptom"))
        start = begin + len(w)
    return spans


def _keys(text: str, mentions: list[Span], spec: AssertionFeatures = SCOPE) -> list[set[int]]:
    """The feature keys of each mention."""
    note = Note.build(text, mentions, WORDS, LABELS)
    rows, keys = assertion_features(note, spec, CueWords.of(WORDS)).arrays()
    out: list[set[int]] = [set() for _ in mentions]
    for r, k in zip(rows.tolist(), keys.tolist(), strict=True):
        out[r].add(k)
    return out


def _cue(side: int, word: str, blocked: int) -> int:
    fields = ((np.array([side]), 1), (np.array([WORDS.index[word]]), WORD_BITS), (np.array([blocked]), 1))
    return int(compose(CUE, *fields)[0])


def _templates(keys: set[int]) -> set[int]:
    return {k >> 56 for k in keys}


def test_a_left_cue_reaches_every_mention_of_its_list() -> None:
    text = "She denied fever, chills or cough."
    keys = _keys(text, _mentions(text, "fever", "chills", "cough"))
    assert all(_cue(LEFT, "denied", 0) in k for k in keys)
    # Mentions between the cue and the mention (0, 1, 2), crossed with the cue: three distinct keys.
    between = [{k for k in ks if k >> 56 == BETWEEN} for ks in keys]
    assert all(len(b) == 1 for b in between) and len(set.union(*between)) == 3


def test_a_terminator_blocks_the_scope_and_says_so() -> None:
    text = "She had no fever but cough."
    fever, cough = _keys(text, _mentions(text, "fever", "cough"))
    assert _cue(LEFT, "no", 0) in fever and _cue(LEFT, "no", 1) not in fever
    assert _cue(LEFT, "no", 1) in cough and _cue(LEFT, "no", 0) not in cough


def test_a_cue_after_the_mention_is_seen_on_the_right() -> None:
    text = "The rash resolved."
    (rash,) = _keys(text, _mentions(text, "rash"))
    assert _cue(RIGHT, "resolved", 0) in rash
    assert [k & 1 for k in rash if k >> 56 == CUE] == [RIGHT]  # no cue on the left


def test_a_cue_in_another_sentence_or_beyond_the_window_is_not_seen() -> None:
    text = "No rash.\nShe had cough."
    _, cough = _keys(text, _mentions(text, "rash", "cough"))
    assert max(_templates(cough)) == 11
    far = "No rash , fever , chills , fever , chills , cough."
    near_keys = _keys(far, _mentions(far, "cough"), AssertionFeatures(scope_window=11))[0]
    short_keys = _keys(far, _mentions(far, "cough"), AssertionFeatures(scope_window=10))[0]
    assert _cue(LEFT, "no", 0) in near_keys and _cue(LEFT, "no", 0) not in short_keys


def test_cue_kind_and_label_are_crossed() -> None:
    text = "She denied cough."
    (cough,) = _keys(text, _mentions(text, "cough"))
    label = np.array([LABELS.index["Sign_symptom"]])
    side, negation, unblocked = np.array([LEFT]), np.array([0]), np.array([0])
    negation_kind = compose(KIND_LABEL, (side, 1), (negation, 1), (unblocked, 1), (label, LABEL_BITS))
    assert int(negation_kind[0]) in cough


def test_feature_set_1_has_no_scope_templates_and_scope_needs_the_cue_words() -> None:
    text = "She denied cough."
    (cough,) = _keys(text, _mentions(text, "cough"), AssertionFeatures())
    assert max(_templates(cough)) == 11
    note = Note.build(text, _mentions(text, "cough"), WORDS, LABELS)
    with pytest.raises(ValueError, match="cue words"):
        assertion_features(note, SCOPE)
    with pytest.raises(ValueError, match="scope_window"):
        AssertionFeatures(scope_window=-1)


def _doc(doc_id: str, text: str, statuses: dict[str, str]) -> Document:
    mentions = _mentions(text, *statuses)
    return Document(doc_id, text, tuple(mentions), assertions=tuple(statuses.values()))


def test_scope_features_tell_a_listed_negated_mention_from_a_present_one() -> None:
    # Lists of three after "denied" (absent) or "had" (present); at test, a new third word. Its cue
    # is five tokens away, outside the 3-word window, so feature set 1 sees the same words in both
    # notes and cannot tell them apart; feature set 2 sees the cue.
    lists = (("rash", "fever", "chills"), ("fever", "chills", "rash"), ("chills", "rash", "fever"))
    train = [
        _doc(f"{cue}{i}", f"She {cue} {a}, {b} or {c}.", {a: status, b: status, c: status})
        for i, (a, b, c) in enumerate(lists)
        for cue, status in (("denied", "absent"), ("had", "present"))
    ]
    negated, present = "She denied rash, fever or cough.", "She had rash, fever or cough."
    narrow = {"left_window": 3, "right_window": 2, "label_window": 1}
    probs, statuses = {}, {}
    for scope in (0, 20):
        model = train_assertion(train, AssertionFeatures(**narrow, scope_window=scope), FIT)
        probs[scope] = [
            model.probabilities(text, _mentions(text, "rash", "fever", "cough"))[2]
            for text in (negated, present)
        ]
        statuses[scope] = [model.classes[int(p.argmax())] for p in probs[scope]]
    np.testing.assert_array_equal(probs[0][0], probs[0][1])
    assert statuses[20] == ["absent", "present"]


def test_an_artifact_of_feature_set_1_loads_and_predicts_as_before(tmp_path: Path) -> None:
    train = [
        _doc("1", "She denied fever.", {"fever": "absent"}),
        _doc("2", "She had cough.", {"cough": "present"}),
    ]
    model = train_assertion(train, AssertionFeatures(), FIT, name="old", version="v1")
    directory = model.save(tmp_path / "old")
    config = json.loads((directory / "config.json").read_text())
    del config["scope_window"]  # what an artifact written before feature set 2 holds
    (directory / "config.json").write_text(json.dumps(config))
    loaded = load_clinical(directory)
    assert isinstance(loaded, AssertionClassifier) and loaded.config.scope_window == 0
    text = "She denied chills, fever or cough."
    mentions = _mentions(text, "chills", "fever", "cough")
    np.testing.assert_array_equal(loaded.probabilities(text, mentions), model.probabilities(text, mentions))


def test_a_cue_word_unseen_in_training_still_acts_through_its_kind() -> None:
    # "abated" never occurs in training; with the scope features on, the cue lists are always in the
    # vocabulary, so it is known as a negation-kind cue and borrows what the other cues taught.
    verbs = (("resolved", "absent"), ("subsided", "absent"), ("ceased", "absent"))
    verbs += (("persisted", "present"), ("worsened", "present"), ("recurred", "present"))
    train = [
        _doc(f"{verb}{word}", f"The {word} {verb}.", {word: status})
        for word in ("fever", "chills", "rash")
        for verb, status in verbs
    ]
    model = train_assertion(train, AssertionFeatures(scope_window=20), FIT)
    set1 = train_assertion(train, AssertionFeatures(), FIT)
    assert "abated" in model.words.index and "abated" not in set1.words.index
    statuses = [
        model.classify([text], [_mentions(text, "cough")])[0][0].status
        for text in ("The cough abated.", "The cough persisted.")
    ]
    assert statuses == ["absent", "present"]

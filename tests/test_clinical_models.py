"""The assertion classifier and the relation extractor: trained on tiny hand-made notes, saved,
loaded, attached to a tagger artifact; candidate pruning on a huge note."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from medner_udf.clinical.assertion import AssertionClassifier
from medner_udf.clinical.assertion_features import AssertionFeatures
from medner_udf.clinical.base import LabelMismatchError, attach, load_clinical, load_heads
from medner_udf.clinical.features import Note
from medner_udf.clinical.relation_features import RelationConfig, candidate_pairs
from medner_udf.clinical.relations import RelationExtractor, decode, relation_classes
from medner_udf.corpus.maccrobat import Document, Relation
from medner_udf.registry import UnknownKindError
from medner_udf.taggers.artifact import ArtifactInfo, write_info
from medner_udf.text.types import Entity, Span
from medner_udf.training.clinical import LinearFit, train_assertion, train_relations

SYMPTOMS = ["fever", "cough", "rash", "pain", "nausea", "chills"]
FIT = LinearFit(c=10.0, min_feature_count=1, min_word_count=1)


def _doc(doc_id: str, lines: list[tuple[str, str, str]]) -> Document:
    """Lines of (prefix, symptom, status); the symptom is a Sign_symptom mention."""
    text, mentions, statuses = "", [], []
    for prefix, word, status in lines:
        begin = len(text) + len(prefix)
        text += f"{prefix}{word}.\n"
        mentions.append(Span(begin, begin + len(word), "Sign_symptom"))
        statuses.append(status)
    return Document(doc_id, text, tuple(mentions), assertions=tuple(statuses))


@pytest.fixture(scope="module")
def assertion_docs() -> list[Document]:
    docs = []
    for i, word in enumerate(SYMPTOMS):
        docs.append(
            _doc(
                str(i),
                [
                    ("She had ", word, "present"),
                    ("She denied ", word, "absent"),
                    ("Possible ", word, "possible"),
                ],
            )
        )
    return docs


@pytest.fixture(scope="module")
def assertion_model(assertion_docs: list[Document]) -> AssertionClassifier:
    return train_assertion(assertion_docs, AssertionFeatures(), FIT, name="tiny-assertion", version="v1")


def test_assertion_learns_cues_and_applies_them_to_new_words(assertion_model: AssertionClassifier) -> None:
    text = "He denied dyspnea.\nHe had dyspnea.\nPossible dyspnea.\n"
    mentions = [Span(10, 17, "Sign_symptom"), Span(26, 33, "Sign_symptom"), Span(44, 51, "Sign_symptom")]
    assert [text[m.begin : m.end] for m in mentions] == ["dyspnea"] * 3
    (result,) = assertion_model.classify([text], [mentions])
    assert [a.status for a in result] == ["absent", "present", "possible"]
    assert all(0.5 < a.score <= 1.0 for a in result)


def test_assertion_batched_equals_one_at_a_time(assertion_model: AssertionClassifier) -> None:
    texts = ["She denied cough.\n", "Possible rash.\n", "No mentions here.\n"]
    entities = [[Entity(11, 16, "cough", "Sign_symptom", 0.9)], [Span(9, 13, "Sign_symptom")], []]
    batched = assertion_model.classify(texts, entities)
    single = [assertion_model.classify([t], [e])[0] for t, e in zip(texts, entities, strict=True)]
    assert batched == single and batched[2] == []


def test_assertion_save_load_round_trip(assertion_model: AssertionClassifier, tmp_path: Path) -> None:
    directory = assertion_model.save(tmp_path / "a")
    assert {p.name for p in directory.iterdir()} == {
        "artifact.json",
        "config.json",
        "vocab.json",
        "model.safetensors",
    }
    loaded = load_clinical(directory)
    assert isinstance(loaded, AssertionClassifier)
    text, mentions = "She denied pain.\n", [Span(11, 15, "Sign_symptom")]
    np.testing.assert_array_equal(
        loaded.probabilities(text, mentions), assertion_model.probabilities(text, mentions)
    )


def test_mention_outside_the_note_is_refused_without_text(assertion_model: AssertionClassifier) -> None:
    with pytest.raises(ValueError, match=r"note 0: mention 5-99") as info:
        assertion_model.classify(["SECRET words"], [[Span(5, 99, "Sign_symptom")]])
    assert "SECRET" not in str(info.value)
    with pytest.raises(TypeError, match="not a single string"):
        assertion_model.classify("She denied pain.", [[]])


# --------------------------------------------------------------------------------------------------
# Relations: "<Severity> <symptom>" -> MODIFY(severity, symptom); "<symptom> after <procedure>":
# procedure BEFORE symptom.
def _relation_doc(doc_id: str, severity: str, symptom: str, procedure: str) -> Document:
    text = f"{severity} {symptom} after {procedure}.\n"
    sev = Span(0, len(severity), "Severity")
    sym = Span(len(severity) + 1, len(severity) + 1 + len(symptom), "Sign_symptom")
    start = sym.end + len(" after ")
    proc = Span(start, start + len(procedure), "Therapeutic_procedure")
    relations = (Relation(sev, sym, "MODIFY"), Relation(proc, sym, "BEFORE"))
    return Document(doc_id, text, (sev, sym, proc), relations=relations)


@pytest.fixture(scope="module")
def relation_model() -> RelationExtractor:
    docs = [
        _relation_doc(f"{i}{j}", sev, sym, proc)
        for i, (sev, sym) in enumerate(zip(["Severe", "Mild", "Acute"], SYMPTOMS, strict=False))
        for j, proc in enumerate(["surgery", "biopsy"])
    ]
    model, missed = train_relations(docs, RelationConfig(), FIT, name="tiny-relations", version="v1")
    assert not missed
    return model


def test_relations_found_with_direction(relation_model: RelationExtractor) -> None:
    doc = _relation_doc("new", "Mild", "rash", "surgery")
    (found,) = relation_model.relations([doc.text], [list(doc.mentions)])
    got = {(doc.mentions[r.head], doc.mentions[r.tail], r.type) for r in found}
    assert got == {(r.head, r.tail, r.type) for r in doc.relations}


def test_relations_save_load_round_trip(relation_model: RelationExtractor, tmp_path: Path) -> None:
    loaded = load_clinical(relation_model.save(tmp_path / "r"))
    assert isinstance(loaded, RelationExtractor)
    doc = _relation_doc("new", "Acute", "pain", "biopsy")
    assert loaded.relations([doc.text], [list(doc.mentions)]) == relation_model.relations(
        [doc.text], [list(doc.mentions)]
    )
    np.testing.assert_array_equal(loaded.compatible, relation_model.compatible)


def test_decode_keeps_one_head_per_modifier_and_thresholds_the_rest() -> None:
    classes = relation_classes(["MODIFY", "BEFORE"])  # NONE, MODIFY>, MODIFY<, BEFORE>, BEFORE<
    a = np.array([0, 0, 1])
    b = np.array([1, 2, 2])
    probs = np.array(
        [
            [0.50, 0.40, 0.00, 0.10, 0.00],  # 0 modifies 1 (0.40)
            [0.30, 0.65, 0.00, 0.05, 0.00],  # 0 modifies 2 (0.65): 0's best head
            [0.55, 0.00, 0.00, 0.00, 0.45],  # 2 BEFORE 1: P(NONE) 0.55 < 0.6
        ],
        dtype=np.float32,
    )
    found = decode(a, b, probs, classes, RelationConfig(none_threshold=0.6, modify_threshold=0.3))
    assert [(r.head, r.tail, r.type) for r in found] == [(0, 2, "MODIFY"), (2, 1, "BEFORE")]
    assert found[0].score == pytest.approx(0.65)


@pytest.mark.slow
def test_candidates_stay_bounded_on_a_10k_line_note(relation_model: RelationExtractor) -> None:
    line = "Severe fever after surgery.\n"
    text = line * 10_000
    mentions = []
    for i in range(10_000):
        base = i * len(line)
        mentions += [
            Span(base, base + 6, "Severity"),
            Span(base + 7, base + 12, "Sign_symptom"),
            Span(base + 19, base + 26, "Therapeutic_procedure"),
        ]
    _, a, _ = relation_model.candidates(text, mentions)
    assert len(a) <= len(mentions) * relation_model.config.max_candidates
    started = time.perf_counter()
    (found,) = relation_model.relations([text], [mentions])
    assert time.perf_counter() - started < 30
    assert 0 < len(found) <= len(a)


def test_candidate_cap_counts_only_compatible_mentions() -> None:
    from medner_udf.clinical.features import Vocabulary

    labels = Vocabulary(["A", "B", "C"], reserved=0)
    text = " ".join(["x"] * 8)
    # A B C C C B B B at tokens 0..7; A-B compatible only.
    order = ["A", "B", "C", "C", "C", "B", "B", "B"]
    mentions = [Span(2 * i, 2 * i + 1, lab) for i, lab in enumerate(order)]
    note = Note.build(text, mentions, Vocabulary([]), labels)
    compatible = np.zeros((3, 3), dtype=bool)
    compatible[0, 1] = compatible[1, 0] = True
    a, b = candidate_pairs(note, RelationConfig(max_candidates=2), compatible)
    assert sorted(zip(a.tolist(), b.tolist(), strict=True)) == [(0, 1), (0, 5)]


# --------------------------------------------------------------------------------------------------
# Heads beside a tagger.
def _fake_tagger(directory: Path, labels: list[str]) -> Path:
    tags = ["O"] + [f"{p}-{lab}" for lab in labels for p in "BIES"]
    directory.mkdir(parents=True)
    write_info(directory, ArtifactInfo("bilstm-cnn-crf", "tagger", "v1", tags))
    return directory


def test_attach_copies_heads_and_load_heads_finds_them(
    assertion_model: AssertionClassifier, relation_model: RelationExtractor, tmp_path: Path
) -> None:
    tagger = _fake_tagger(tmp_path / "tagger", ["Sign_symptom"])
    a = assertion_model.save(tmp_path / "a")
    r = relation_model.save(tmp_path / "r")
    assert attach(tagger, a, r) == [tagger / "assertion", tagger / "relations"]
    heads = load_heads(tagger)
    assert isinstance(heads.assertion, AssertionClassifier) and isinstance(heads.relations, RelationExtractor)
    assert load_heads(_fake_tagger(tmp_path / "bare", ["Sign_symptom"])).empty


def test_attach_refuses_a_head_of_the_wrong_task(
    assertion_model: AssertionClassifier, tmp_path: Path
) -> None:
    tagger = _fake_tagger(tmp_path / "tagger", ["Sign_symptom"])
    with pytest.raises(ValueError, match="holds a assertion model"):
        attach(tagger, relations=assertion_model.save(tmp_path / "a"))


def test_label_mismatch_names_both_label_sets(relation_model: RelationExtractor, tmp_path: Path) -> None:
    tagger = _fake_tagger(tmp_path / "tagger", ["Medication", "Sign_symptom"])
    with pytest.raises(LabelMismatchError) as info:
        attach(tagger, relations=relation_model.save(tmp_path / "r"))
    message = str(info.value)
    assert "['Severity', 'Sign_symptom', 'Therapeutic_procedure']" in message
    assert "['Medication', 'Sign_symptom']" in message
    assert "unknown to the relations model: ['Medication']" in message


def test_unknown_kind_and_a_tagger_folder_are_refused(
    assertion_model: AssertionClassifier, tmp_path: Path
) -> None:
    directory = assertion_model.save(tmp_path / "a")
    info = json.loads((directory / "artifact.json").read_text())
    (directory / "artifact.json").write_text(json.dumps({**info, "kind": "assertion-magic"}))
    with pytest.raises(UnknownKindError, match="assertion-magic"):
        load_clinical(directory)
    with pytest.raises(ValueError, match="not a clinical model artifact"):
        load_clinical(_fake_tagger(tmp_path / "tagger", ["Sign_symptom"]))

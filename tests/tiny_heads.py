"""Tiny assertion and relation heads for the job's tests, trained in seconds on hand-made notes.

The notes use the test gazetteer's terms and labels (``TERMS`` here), so heads
trained here attach to that gazetteer (their labels cover its labels) and the job's tests can state
exactly what the heads say: "No fever." is absent, "Possible fever." possible, "fever of 38.5"
gives 38.5 MODIFY fever, "a mass in the liver" liver MODIFY mass, "Hemoglobin was 9.1 g/dL." the
value MODIFY its test, "Aspirin 81 mg was given orally." dosage and route MODIFY the medication, and
"Laparoscopy with biopsy." biopsy SUB_PROCEDURE laparoscopy (``SQL_TERMS`` tag those).
"""

from __future__ import annotations

from pathlib import Path

from medner_udf.clinical.assertion import AssertionClassifier
from medner_udf.clinical.assertion_features import AssertionFeatures
from medner_udf.clinical.base import attach
from medner_udf.clinical.relation_features import RelationConfig
from medner_udf.clinical.relations import RelationExtractor
from medner_udf.corpus.maccrobat import Document, Relation
from medner_udf.text.types import Span
from medner_udf.training.clinical import LinearFit, train_assertion, train_relations

# A gazetteer's terms for the clinical SQL questions (README): the test gazetteer's and more.
# The test gazetteer's terms: every Spark test tags with these, so expected entities are exact.
TERMS = [
    ("chest pain", "Sign_symptom"),
    ("fever", "Sign_symptom"),
    ("aspirin", "Medication"),
    ("CT", "Diagnostic_procedure"),
    ("mass", "Sign_symptom"),
    ("liver", "Biological_structure"),
    ("man", "Sex"),
    ("38.5", "Lab_value"),
]
SQL_TERMS = [
    *TERMS,
    ("hemoglobin", "Diagnostic_procedure"),
    ("9.1 g/dL", "Lab_value"),
    ("81 mg", "Dosage"),
    ("orally", "Administration"),
    ("laparoscopy", "Therapeutic_procedure"),
    ("biopsy", "Diagnostic_procedure"),
]

FIT = LinearFit(c=10.0, min_feature_count=1, min_word_count=1)
SYMPTOMS = ["fever", "chest pain", "mass"]

# A line is a list of pieces: plain text, or (term, label, assertion). Relations name pieces by
# their index among the line's terms: (head, tail, type).
Piece = str | tuple[str, str, str]
LINES: list[tuple[list[Piece], list[tuple[int, int, str]]]] = [
    (["A 45-year-old ", ("man", "Sex", "present"), " had ", ("{s}", "Sign_symptom", "present"), "."], []),
    (["No ", ("{s}", "Sign_symptom", "absent"), "."], []),
    (["He denied ", ("{s}", "Sign_symptom", "absent"), " today."], []),
    (["Possible ", ("{s}", "Sign_symptom", "possible"), "."], []),
    (
        [
            ("CT", "Diagnostic_procedure", "present"),
            " showed a ",
            ("mass", "Sign_symptom", "present"),
            " in the ",
            ("liver", "Biological_structure", "present"),
            ".",
        ],
        [(2, 1, "MODIFY")],
    ),
    (
        [("fever", "Sign_symptom", "present"), " of ", ("38.5", "Lab_value", "present"), " today."],
        [(1, 0, "MODIFY")],
    ),
    ([("Aspirin", "Medication", "present"), " was given."], []),
    (
        [
            ("Hemoglobin", "Diagnostic_procedure", "present"),
            " was ",
            ("9.1 g/dL", "Lab_value", "present"),
            ".",
        ],
        [(1, 0, "MODIFY")],
    ),
    (
        [
            ("Aspirin", "Medication", "present"),
            " ",
            ("81 mg", "Dosage", "present"),
            " was given ",
            ("orally", "Administration", "present"),
            ".",
        ],
        [(1, 0, "MODIFY"), (2, 0, "MODIFY")],
    ),
    (
        [
            ("Laparoscopy", "Therapeutic_procedure", "present"),
            " with ",
            ("biopsy", "Diagnostic_procedure", "present"),
            ".",
        ],
        [(1, 0, "SUB_PROCEDURE")],
    ),
]


def _document(doc_id: str, symptom: str) -> Document:
    text, mentions, statuses, relations = "", [], [], []
    for pieces, rels in LINES:
        line_mentions: list[Span] = []
        for piece in pieces:
            if isinstance(piece, str):
                text += piece
                continue
            term, label, status = piece
            term = term.format(s=symptom)
            span = Span(len(text), len(text) + len(term), label)
            text += term
            line_mentions.append(span)
            statuses.append(status)
        mentions += line_mentions
        relations += [Relation(line_mentions[h], line_mentions[t], kind) for h, t, kind in rels]
        text += "\n"
    return Document(doc_id, text, tuple(mentions), assertions=tuple(statuses), relations=tuple(relations))


def tiny_documents() -> list[Document]:
    return [_document(f"d{i}", s) for i in range(3) for s in SYMPTOMS]


def train_tiny_heads() -> tuple[AssertionClassifier, RelationExtractor]:
    docs = tiny_documents()
    assertion = train_assertion(docs, AssertionFeatures(), FIT, name="tiny-assertion", version="a1")
    relations, _ = train_relations(docs, RelationConfig(), FIT, name="tiny-relations", version="r1")
    return assertion, relations


def attach_tiny_heads(tagger_dir: Path, work: Path) -> Path:
    """Train the tiny heads, save them under ``work`` and attach them to ``tagger_dir``."""
    assertion, relations = train_tiny_heads()
    attach(tagger_dir, assertion.save(work / "assertion"), relations.save(work / "relations"))
    return tagger_dir

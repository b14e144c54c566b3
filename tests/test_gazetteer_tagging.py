"""The gazetteer tagger: longest case-insensitive match, exact offsets, artifact round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from medner_udf.corpus.maccrobat import Document
from medner_udf.taggers.artifact import ArtifactError, write_json
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.gazetteer import GazetteerTagger
from medner_udf.text.types import Span

TERMS = [
    ("chest pain", "Sign_symptom"),
    ("pain", "Sign_symptom"),
    ("chest", "Biological_structure"),
    ("CT", "Diagnostic_procedure"),
]


def test_longest_match_wins_and_offsets_index_the_note() -> None:
    text = "Severe CHEST  pain;\r\nct and chest.  Pain"
    ents = GazetteerTagger.from_terms(TERMS).tag([text])[0]
    assert [(e.text, e.label) for e in ents] == [
        ("CHEST  pain", "Sign_symptom"),
        ("ct", "Diagnostic_procedure"),
        ("chest", "Biological_structure"),
        ("Pain", "Sign_symptom"),
    ]
    assert all(text[e.begin : e.end] == e.text and e.score == 1.0 for e in ents)


def test_save_load_round_trip_gives_identical_entities(tmp_path: Path) -> None:
    tagger = GazetteerTagger.from_terms(TERMS, name="g", version="3")
    tagger.save(tmp_path / "g")
    loaded = load_tagger(tmp_path / "g")
    assert isinstance(loaded, GazetteerTagger) and loaded.version == "3"
    notes = ["chest pain and CT", "", "nothing"]
    assert loaded.tag(notes) == tagger.tag(notes)


def test_from_corpus_keeps_frequent_surfaces_with_majority_label() -> None:
    text = "fever. Fever - fever - rash"
    doc = Document(
        "d",
        text,
        (
            Span(0, 5, "Sign_symptom"),
            Span(7, 12, "Sign_symptom"),
            Span(15, 20, "Disease_disorder"),
            Span(13, 14, "Lab_value"),
            Span(21, 22, "Lab_value"),
            Span(23, 27, "Sign_symptom"),
        ),
    )
    tagger = GazetteerTagger.from_corpus([doc], min_count=2)
    assert [(e.text, e.label) for e in tagger.tag(["rash or FEVER -"])[0]] == [("FEVER", "Sign_symptom")]


def test_malformed_terms_file_fails_with_the_file_named(tmp_path: Path) -> None:
    GazetteerTagger.from_terms(TERMS).save(tmp_path)
    write_json(tmp_path / "terms.json", {"terms": [["fever"]]})
    with pytest.raises(ArtifactError, match=r"terms\.json"):
        GazetteerTagger.load(tmp_path)

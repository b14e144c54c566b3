"""Every tagger kind honours one contract at its boundary (artifacts from tests/data/legacy-0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medner_udf.taggers.base import Tagger, load_tagger

LEGACY = Path(__file__).resolve().parent / "data" / "legacy-0.1"
KINDS = ["bilstm-cnn-crf", "transformer", "gazetteer"]


@pytest.fixture(scope="module", params=KINDS)
def tagger(request: pytest.FixtureRequest) -> Tagger:
    return load_tagger(LEGACY / request.param, device="cpu")


def test_every_tagger_refuses_a_bare_string_with_the_same_message(tagger: Tagger) -> None:
    # A str is a sequence of characters: tagging it would tag each character as a note.
    with pytest.raises(TypeError, match=r"^tag\(\) takes a sequence of notes, not a single string"):
        tagger.tag("A man with chest pain.")


def test_every_tagger_names_the_item_that_is_not_a_string(tagger: Tagger) -> None:
    with pytest.raises(TypeError, match=r"texts\[1\] is bytes, expected str"):
        tagger.tag(["fine", b"chest pain"])  # type: ignore[list-item]


def test_every_tagger_refuses_a_batch_size_below_one(tagger: Tagger) -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        tagger.tag(["chest pain"], batch_size=0)


def test_every_tagger_returns_one_sorted_list_per_note_with_exact_offsets(tagger: Tagger) -> None:
    notes = ["", "CT showed a mass; aspirin given.\nChest pain and chest pain.", "   \n"]
    result = tagger.tag(notes)
    assert len(result) == len(notes) and result[0] == [] and result[2] == []
    assert result[1], "the fixture model finds something in its own training words"
    for note, entities in zip(notes, result, strict=True):
        assert entities == sorted(entities, key=lambda e: (e.begin, e.end, e.label))
        assert all(note[e.begin : e.end] == e.text and 0.0 <= e.score <= 1.0 for e in entities)

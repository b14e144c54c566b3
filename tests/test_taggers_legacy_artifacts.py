"""Artifacts written by medner before the package was restructured still load and tag identically."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medner_udf.taggers.base import load_tagger

LEGACY = Path(__file__).resolve().parent / "data" / "legacy-0.1"
EXPECTED = json.loads((LEGACY / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("kind", ["bilstm-cnn-crf", "transformer", "gazetteer"])
def test_legacy_artifact_loads_and_tags_as_it_did(kind: str) -> None:
    tagger = load_tagger(LEGACY / kind, device="cpu")
    assert tagger.kind == kind
    got = tagger.tag(EXPECTED["texts"])
    expected = EXPECTED[kind]
    assert sum(map(len, expected)) > 0, "the fixture must hold entities to compare"
    assert len(got) == len(expected)
    for entities, want in zip(got, expected, strict=True):
        assert [(e.begin, e.end, e.text, e.label) for e in entities] == [tuple(w[:4]) for w in want]
        # Entity probabilities come from float32 forward-backward recursions whose sums are now
        # grouped by constraint bucket (a dense product before) and finished in float64: equal to
        # what float32 carries over a hundred steps, about 1e-5.
        assert [e.score for e in entities] == pytest.approx([w[4] for w in want], abs=1e-4)

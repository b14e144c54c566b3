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
        # Entity probabilities are now summed in float64 (float32 before): equal to float32 accuracy.
        assert [e.score for e in entities] == pytest.approx([w[4] for w in want], abs=1e-5)

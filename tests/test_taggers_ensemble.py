"""The ensemble kind: members' CRF potentials summed with weights, decoded as one CRF."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
from medner_udf.taggers.ensemble import EnsembleTagger
from medner_udf.training.ensemble import weight_grid

# One line each: a BiLSTM decodes one segment per note, as the ensemble decodes one note.
ONE_LINE = [
    "A 45-year-old man presented with chest pain.",
    "She was given aspirin 81 mg daily.",
    "CT of the abdomen showed a 3 cm mass.",
    "Chest pain and aspirin daily.",
]


@pytest.fixture(scope="module")
def members(train_tiny_bilstm: Callable[..., BiLstmCnnCrfTagger]) -> list[BiLstmCnnCrfTagger]:
    return [train_tiny_bilstm(epochs=40, seed=0), train_tiny_bilstm(epochs=25, seed=1)]


def _spans(results: list[list[object]]) -> list[list[tuple[int, int, str]]]:
    return [[(e.begin, e.end, e.label) for e in row] for row in results]  # type: ignore[attr-defined]


def test_one_member_with_all_the_weight_tags_as_that_member(members: list[BiLstmCnnCrfTagger]) -> None:
    for i in (0, 1):
        weights = [1.0 if j == i else 0.0 for j in range(2)]
        ensemble = EnsembleTagger.create(members, weights, name="e", version="1")
        got, want = ensemble.tag(ONE_LINE), members[i].tag(ONE_LINE)
        assert _spans(got) == _spans(want)
        for g_row, w_row in zip(got, want, strict=True):
            assert [e.score for e in g_row] == pytest.approx([e.score for e in w_row], abs=1e-5)


def test_ensemble_potentials_are_the_weighted_sum(members: list[BiLstmCnnCrfTagger]) -> None:
    ensemble = EnsembleTagger.create(members, [0.3, 0.7], name="e", version="1")
    assert ensemble.net.crf is not None
    for name in ("start_transitions", "transitions", "end_transitions"):
        want = 0.3 * getattr(members[0].net.crf, name) + 0.7 * getattr(members[1].net.crf, name)
        torch.testing.assert_close(getattr(ensemble.net.crf, name), want)
    texts = [*ONE_LINE, "Chest pain.\nAspirin given.\n\nCT of the liver."]
    # The same forward batches for both: a BiLSTM's character CNN is as wide as the longest token
    # of its batch, so emissions depend (slightly) on which notes share a batch.
    combined = ensemble.weighted_emissions(texts, 8)
    parts = [m.note_emissions(texts, 8) for m in members]
    for n in range(len(texts)):
        torch.testing.assert_close(combined[n], 0.3 * parts[0][n] + 0.7 * parts[1][n])


def test_ensemble_artifact_saves_loads_and_tags_identically(
    members: list[BiLstmCnnCrfTagger], tmp_path: Path
) -> None:
    ensemble = EnsembleTagger.create(members, [0.4, 0.6], name="e", version="1")
    folder = ensemble.save(tmp_path / "ens")
    assert (folder / "members" / "0" / "artifact.json").is_file()
    loaded = load_tagger(folder, device="cpu")
    assert isinstance(loaded, EnsembleTagger) and loaded.net.config.weights == (0.4, 0.6)
    texts = [*ONE_LINE, "Two lines:\nchest pain, then aspirin."]
    assert _spans(loaded.tag(texts)) == _spans(ensemble.tag(texts))


def test_members_with_other_tags_are_refused_naming_the_member(
    members: list[BiLstmCnnCrfTagger], train_tiny_bilstm: Callable[..., BiLstmCnnCrfTagger]
) -> None:
    other = train_tiny_bilstm(epochs=1)
    other.info = dataclasses.replace(other.info, name="other", version="2", tags=[*other.tags[:-1], "S-Zzz"])
    ensemble = EnsembleTagger.create(members, [0.5, 0.5], name="e", version="1")
    with pytest.raises(ArtifactError, match=r"member 1 \(bilstm-cnn-crf other/2\) has 37 tags"):
        EnsembleTagger(ensemble.info, ensemble.net, [members[0], other])


def test_weight_grid_covers_the_simplex_without_zero_weights() -> None:
    grid = weight_grid(2)
    assert grid[0] == (0.1, 0.9) and grid[-1] == (0.9, 0.1) and len(grid) == 9
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) > 0 for w in weight_grid(3))

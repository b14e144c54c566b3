"""``medner train --model assertion|relations`` reaches the linear trainers through the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medner_udf.clinical.base import load_clinical
from medner_udf.training.base import StandaloneTrainer, load_train_settings, trainable_kinds
from medner_udf.training.clinical import AssertionTrainSettings, RelationTrainSettings
from medner_udf.training.loop import train


def test_clinical_kinds_are_registered_with_their_settings() -> None:
    assert {"assertion", "relations", "bilstm-cnn-crf"} <= set(trainable_kinds())
    settings = load_train_settings("relations", overrides={"max_candidates": "5", "fit.c": "0.5"})
    assert isinstance(settings, RelationTrainSettings)
    assert settings.model.max_candidates == 5 and settings.fit.c == 0.5


@pytest.mark.parametrize(("kind", "task"), [("assertion", "assertion"), ("relations", "relations")])
def test_train_writes_a_loadable_artifact_with_scores(
    corpus_dir: Path, tmp_path: Path, kind: str, task: str
) -> None:
    overrides = {
        "data.corpus": str(corpus_dir),
        "data.train_docs": "3",
        "data.dev_docs": "2",
        "run.output_dir": str(tmp_path),
        "run.version": "v1",
        "run.evaluate_test": "false",
    }
    settings = load_train_settings(kind, overrides=overrides)
    assert isinstance(settings, AssertionTrainSettings | RelationTrainSettings)
    result = train(settings)
    assert result.artifact_dir == tmp_path / settings.run.name / "v1"
    model = load_clinical(result.artifact_dir)
    assert model.task == task and model.version == "v1"
    metrics = json.loads((result.artifact_dir / "metrics.json").read_text())
    assert metrics["data"]["train_docs"] == 3 and "test" not in metrics
    assert 0.0 <= metrics["dev"]["micro"]["f1"] <= 1.0
    card = (result.artifact_dir / "MODEL_CARD.md").read_text()
    assert card.startswith(f"# {settings.run.name} v1")
    if kind == "assertion":  # the profile's cue and scope features are in the artifact and its card
        config = json.loads((result.artifact_dir / "config.json").read_text())
        assert config["scope_window"] == settings.model.scope_window > 0
        assert "negation/hedging cue" in card


def test_standalone_trainers_are_not_adapters() -> None:
    from medner_udf.training.base import ADAPTERS

    assert issubclass(ADAPTERS.get("assertion"), StandaloneTrainer)
    assert not issubclass(ADAPTERS.get("bilstm-cnn-crf"), StandaloneTrainer)

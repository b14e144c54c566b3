"""Knowledge distillation: a BiLSTM student trained on gold tags and a teacher CRF's distribution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medner_udf.taggers.artifact import ArtifactError
from medner_udf.taggers.base import load_tagger
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import train

pytestmark = pytest.mark.slow

TINY = {
    "optim.epochs": 1,
    "data.dev_docs": 1,
    "inputs.glove_words": 2000,
    "model.lstm_hidden": 8,
    "model.char_filters": 8,
    "run.evaluate_test": False,
    "run.progress": False,
    "run.num_threads": 1,
}


def _train(corpus: Path, out: Path, name: str, train_docs: int, **extra: object) -> Path:
    settings = load_train_settings(
        "bilstm-cnn-crf",
        overrides={**TINY, "data.corpus": str(corpus), "run.output_dir": str(out), "run.name": name,
                   "run.version": "v1", "data.train_docs": train_docs, **extra},
    )  # fmt: skip
    return train(settings).artifact_dir


def test_a_student_distils_from_a_teacher_with_the_same_tags(corpus_dir: Path, tmp_path: Path) -> None:
    teacher = _train(corpus_dir, tmp_path, "teacher", 3)
    student = _train(
        corpus_dir, tmp_path, "student", 3, **{"inputs.teacher": str(teacher), "inputs.distill_weight": 0.5}
    )
    metrics = json.loads((student / "metrics.json").read_text())
    assert metrics["data"]["teacher"] == "bilstm-cnn-crf teacher/v1"
    assert metrics["history"][0]["loss"] > 0  # the soft cross-entropy is a cross-entropy: positive
    assert "distilled from" in (student / "MODEL_CARD.md").read_text()
    assert load_tagger(student, device="cpu").tags == load_tagger(teacher, device="cpu").tags


def test_a_teacher_with_other_entity_types_is_refused(corpus_dir: Path, tmp_path: Path) -> None:
    teacher = _train(corpus_dir, tmp_path, "teacher", 1)  # the first document alone: fewer types
    with pytest.raises(ArtifactError, match="must be trained on the same entity types"):
        _train(corpus_dir, tmp_path, "student", 3, **{"inputs.teacher": str(teacher)})

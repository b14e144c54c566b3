"""``medner demo`` attaches assertion and relation heads to the model it picked, training them only
when none has been trained (small data here: 3 train and 2 dev documents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medner_udf.cli.demo import ensure_heads
from medner_udf.clinical.base import load_heads
from medner_udf.taggers.gazetteer import GazetteerTagger

SMALL = {"data.train_docs": "3", "data.dev_docs": "2", "run.evaluate_test": "false"}


def versions(models: Path, name: str) -> list[str]:
    return sorted(p.name for p in (models / name).iterdir())


@pytest.mark.slow  # fits both linear heads on three corpus documents
def test_demo_trains_heads_once_and_attaches_them_to_each_model(corpus_dir: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = GazetteerTagger.from_terms([("fever", "Sign_symptom")], name="t1", version="1").save(
        models / "t1" / "1"
    )
    assert ensure_heads(first, models, corpus_dir, SMALL)
    heads = load_heads(first)
    assert heads.assertion is not None and heads.relations is not None
    trained = {name: versions(models, name) for name in ("maccrobat-assertion", "maccrobat-relations")}
    assert all(len(v) == 1 for v in trained.values())
    assert not ensure_heads(first, models, corpus_dir, SMALL)  # already attached: nothing to do

    second = GazetteerTagger.from_terms([("fever", "Sign_symptom")], name="t2", version="1").save(
        models / "t2" / "1"
    )
    assert ensure_heads(second, models, corpus_dir, SMALL)
    # The heads trained for the first model are reused, not trained again.
    assert {name: versions(models, name) for name in trained} == trained
    assert load_heads(second).relations.version == trained["maccrobat-relations"][0]

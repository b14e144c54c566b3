"""The transformer train job on a tiny offline encoder and two real documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

# The tiny-encoder builder lives with the tagger tests (pytest puts tests/ on sys.path).
from test_transformer_tagger import make_encoder_dir

from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.training.transformer import TransformerTrainSettings, linear_warmup_decay, train_transformer


def test_transformer_train_writes_a_loadable_artifact(corpus_dir: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    encoder = make_encoder_dir(tmp_path, "distilbert")
    settings = TransformerTrainSettings(
        name="tiny",
        version="v1",
        encoder=str(encoder),
        corpus=str(corpus_dir),
        output_dir=str(tmp_path / "models"),
        epochs=2,
        train_docs=2,
        dev_docs=1,
        batch_size=8,
        evaluate_test=False,
        num_threads=1,
        progress=False,
        window=64,
        stride=40,
    )
    try:
        result = train_transformer(settings)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "models" / "tiny" / "v1"
    assert result.artifact_dir == out
    names = {p.name for p in out.iterdir()}
    assert {
        "artifact.json",
        "config.json",
        "model.safetensors",
        "metrics.json",
        "MODEL_CARD.md",
        "tokenizer",
    } <= names
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["best_epoch"] in (1, 2)
    assert 0.0 <= metrics["dev"]["strict"]["f1"] <= 1.0 and "test" not in metrics
    assert metrics["encoder_type"] == "distilbert"
    loaded = TransformerTagger.load(out, device="cpu")
    assert loaded.config.window == 64 and loaded.info.version == "v1"
    assert "distilbert" in (out / "MODEL_CARD.md").read_text()


def test_transformer_train_settings_validate() -> None:
    with pytest.raises(ValueError, match="head"):
        TransformerTrainSettings(head="lstm")
    with pytest.raises(ValueError, match="scope"):
        TransformerTrainSettings(scope="doc")
    with pytest.raises(ValueError, match="epochs"):
        TransformerTrainSettings(epochs=0)
    with pytest.raises(ValueError, match="warmup_fraction"):
        TransformerTrainSettings(warmup_fraction=1.0)


def test_transformer_linear_warmup_decay_shape() -> None:
    f = linear_warmup_decay(4, 14)
    ramp = [f(s) for s in range(4)]
    assert ramp == sorted(ramp) and ramp[-1] < 1.0
    assert f(4) == pytest.approx(1.0)
    assert f(9) == pytest.approx(0.5)
    assert f(14) == 0.0

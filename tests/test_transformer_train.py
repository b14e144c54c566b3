"""The transformer train job on a tiny offline encoder and two real documents."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from medner_udf.config import SettingsError
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import train


def test_transformer_train_writes_a_loadable_artifact(
    corpus_dir: Path, tmp_path: Path, tiny_encoder: Callable[[str], Path]
) -> None:
    threads = torch.get_num_threads()
    encoder = tiny_encoder("distilbert")
    settings = load_train_settings(
        "transformer",
        overrides={
            "run.name": "tiny",
            "run.version": "v1",
            "inputs.encoder": str(encoder),
            "data.corpus": str(corpus_dir),
            "run.output_dir": str(tmp_path / "models"),
            "optim.epochs": 2,
            "data.train_docs": 2,
            "data.dev_docs": 1,
            "optim.batch_size": 8,
            "run.evaluate_test": False,
            "run.num_threads": 1,
            "run.progress": False,
            "model.window": 64,
            "model.stride": 40,
        },
    )
    try:
        result = train(settings)
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
    assert metrics["model"]["kind"] == "transformer" and metrics["data"]["train_docs"] == 2
    assert metrics["settings"]["model"]["window"] == 64
    loaded = TransformerTagger.load(out, device="cpu")
    assert loaded.config.window == 64 and loaded.info.version == "v1"
    assert loaded.metrics == metrics
    assert "(distilbert)" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("model.head", "lstm", "head"),
        ("model.scope", "doc", "scope"),
        ("optim.epochs", 0, "epochs"),
        ("optim.warmup_fraction", 1.0, "warmup_fraction"),
        ("optim.schedule", "cosine", "schedule"),
        ("model.scope", "segment", "pack_lines"),  # the plain recipe tags single lines
    ],
)
def test_transformer_train_settings_validate(key: str, value: object, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_train_settings("transformer", overrides={key: value})

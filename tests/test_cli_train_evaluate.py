"""`medner train` and `medner evaluate` end to end on a handful of real documents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medner_udf.cli.main import main
from medner_udf.corpus.maccrobat import DEV_IDS, read_corpus

pytestmark = pytest.mark.slow

TINY = [
    "--set", "train_docs=4", "--set", "dev_docs=2", "--set", "epochs=2", "--set", "glove_words=2000",
    "--set", "lstm_hidden=16", "--set", "char_filters=8", "--set", "evaluate_test=false",
    "--set", "version=t1", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def trained_artifact(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("models")
    result = CliRunner().invoke(
        main, ["train", "--corpus", str(corpus_dir), "--output-dir", str(out), *TINY], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    artifact = Path(summary["artifact"])
    assert artifact == out / "maccrobat-bilstm-cnn-crf" / "t1"
    assert summary["best_epoch"] in (1, 2)
    return artifact


def test_cli_train_writes_complete_artifact(trained_artifact: Path) -> None:
    names = {p.name for p in trained_artifact.iterdir()}
    assert {
        "artifact.json",
        "config.json",
        "model.safetensors",
        "vocab.json",
        "metrics.json",
        "MODEL_CARD.md",
    } <= names
    metrics = json.loads((trained_artifact / "metrics.json").read_text())
    assert metrics["data"]["train_docs"] == 4 and metrics["data"]["dev_docs"] == 2
    assert len(metrics["history"]) == 2
    assert "test" not in metrics  # evaluate_test=false
    card = (trained_artifact / "MODEL_CARD.md").read_text()
    assert "dev strict micro F1" in card and "MACCROBAT2020" in card
    assert (
        f"with the `{metrics['settings']['data']['overlap_policy']}` policy" in card
    )  # the policy actually used
    size_mb = sum(p.stat().st_size for p in trained_artifact.iterdir()) / 2**20
    assert size_mb < 100


def test_cli_evaluate_writes_report(trained_artifact: Path, corpus_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        main,
        ["evaluate", "--model", str(trained_artifact), "--split", "dev", "--corpus", str(corpus_dir),
         "--out", str(out), "--device", "cpu"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads((out / "scores.json").read_text())
    assert 0.0 <= scores["strict"]["f1"] <= 1.0
    assert scores["strict"]["n_gold"] == sum(len(d.mentions) for d in read_corpus(corpus_dir, "dev"))
    texts = {d.doc_id: d.text for d in read_corpus(corpus_dir, "dev")}
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["doc_id"] for line in lines) == sorted(DEV_IDS)
    for line in lines:
        row = json.loads(line)
        for ent in row["entities"]:
            assert 0 <= ent["start"] < ent["end"] <= len(texts[row["doc_id"]])
            assert set(ent) >= {"start", "end", "label"}
    assert (out / "confusion.png").stat().st_size > 1000


def test_cli_train_rejects_unknown_setting(corpus_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--corpus", str(corpus_dir), "--set", "epochz=3"])
    # a usage error, reported in one line (tests/test_cli_errors.py), not raised
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "unknown setting" in result.stderr


def test_cli_train_reports_missing_corpus(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["train", "--corpus", str(tmp_path / "nope"), "--set", "epochs=1"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: corpus folder {tmp_path / 'nope'} does not exist")

"""evaluate_tagger with a fake tagger on the tiny hand-made corpus: files, JSONL format, scores."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from medner_udf.corpus.maccrobat import read_corpus
from medner_udf.evaluation.report import evaluate_tagger
from medner_udf.taggers.artifact import ArtifactInfo
from medner_udf.taggers.base import Tagger
from medner_udf.text.types import Entity, Span

# Per document (by its text's first word): spans the fake returns instead of the gold ones.
# 1002: CT gets the wrong label, "mass" loses its last character; 1003: a spurious "denied";
# 1004 (no gold): nothing. 1001 is returned exactly.
PERTURBED: dict[str, list[tuple[Span, float]]] = {
    "CT": [
        (Span(0, 2, "Medication"), 0.4),
        (Span(12, 15, "Sign_symptom"), 0.3),
        (Span(24, 29, "Biological_structure"), 0.9),
    ],
    "She": [(Span(0, 3, "Sex"), 0.8), (Span(4, 10, "Activity"), 0.2), (Span(11, 16, "Sign_symptom"), 0.7)],
    "No": [],
}


class FakeTagger(Tagger):
    """Returns the gold mentions of a known text (score 0.9) or the perturbed spans above."""

    kind = "fake"

    def __init__(
        self,
        gold_by_text: dict[str, tuple[Span, ...]],
        perturbed: dict[str, list[tuple[Span, float]]] = PERTURBED,
    ) -> None:
        self.gold_by_text = gold_by_text
        self.perturbed = perturbed
        self.info = ArtifactInfo(kind="fake", name="fake-model", version="v1", tags=["O"])
        self.calls: list[tuple[int, int | None]] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> FakeTagger:
        return self

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        self.calls.append((len(texts), batch_size))
        out = []
        for text in texts:
            first_word = text.split()[0]
            if first_word in self.perturbed:
                scored = self.perturbed[first_word]
            else:
                scored = [(s, 0.9) for s in self.gold_by_text[text]]
            out.append([Entity(s.begin, s.end, text[s.begin : s.end], s.label, p) for s, p in scored])
        return out

    def save(self, directory: Path | str) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> Tagger:
        raise NotImplementedError


@pytest.fixture(scope="module")
def evaluated(
    tiny_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, object], Path, FakeTagger]:
    """One evaluation shared by the module's read-only checks (plotting is the slow part)."""
    docs = read_corpus(tiny_corpus)
    tagger = FakeTagger({d.text: d.mentions for d in docs})
    out_dir = tmp_path_factory.mktemp("eval")
    result = evaluate_tagger(tagger, docs, out_dir, batch_size=3)
    return result, out_dir, tagger


def test_writes_all_report_files(evaluated: tuple[dict[str, object], Path, FakeTagger]) -> None:
    _, out_dir, tagger = evaluated
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "confusion.png",
        "per_type.txt",
        "predictions.jsonl",
        "scores.json",
    ]
    assert (out_dir / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert tagger.calls == [(4, 3)]  # one tagging call over all documents, batch size passed through


def test_predictions_jsonl_format(evaluated: tuple[dict[str, object], Path, FakeTagger]) -> None:
    _, out_dir, _ = evaluated
    lines = (out_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["doc_id"] for r in rows] == ["1001", "1002", "1003", "1004"]
    assert all(list(r) == ["doc_id", "entities"] for r in rows)
    assert rows[1]["entities"] == [
        {"start": 0, "end": 2, "label": "Medication", "score": 0.4},
        {"start": 12, "end": 15, "label": "Sign_symptom", "score": 0.3},
        {"start": 24, "end": 29, "label": "Biological_structure", "score": 0.9},
    ]
    assert all(list(e) == ["start", "end", "label", "score"] for r in rows for e in r["entities"])
    assert rows[3]["entities"] == []
    assert [e["start"] for e in rows[0]["entities"]] == [2, 14, 22, 34]


def test_scores_against_hand_computed_figures(evaluated: tuple[dict[str, object], Path, FakeTagger]) -> None:
    result, out_dir, _ = evaluated
    on_disk = json.loads((out_dir / "scores.json").read_text(encoding="utf-8"))
    assert on_disk == result
    # 9 gold, 10 predicted, 7 exact; relaxed: 8 of 9 gold found, 8 of 10 predictions overlap gold.
    assert on_disk["strict"]["tp"] == 7
    assert (on_disk["strict"]["n_pred"], on_disk["strict"]["n_gold"]) == (10, 9)
    assert on_disk["strict"]["f1"] == pytest.approx(2 * 0.7 * (7 / 9) / (0.7 + 7 / 9))
    assert on_disk["relaxed"]["precision"] == pytest.approx(0.8)
    assert on_disk["relaxed"]["recall"] == pytest.approx(8 / 9)
    # Gold types: Age 1, Sex 1, Sign_symptom 2/3, Medication 2/3, Diagnostic_procedure 0, Biological_structure 1.
    assert on_disk["macro_f1"] == pytest.approx((1 + 1 + 2 / 3 + 2 / 3 + 0 + 1) / 6)
    assert on_disk["per_type"]["Activity"] == {
        "tp": 0, "n_pred": 1, "n_gold": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
    }  # fmt: skip
    assert on_disk["model_name"] == "fake-model" and on_disk["model_version"] == "v1"
    assert on_disk["n_docs"] == 4 and on_disk["doc_ids"] == ["1001", "1002", "1003", "1004"]
    assert on_disk["tokens_per_second"] > 0
    assert 0.0 < on_disk["token_level"]["seqeval"]["f1"] < 1.0


def test_per_type_table_matches_scores(evaluated: tuple[dict[str, object], Path, FakeTagger]) -> None:
    _, out_dir, _ = evaluated
    table = (out_dir / "per_type.txt").read_text(encoding="utf-8").splitlines()
    sign = next(line for line in table if line.startswith("Sign_symptom"))
    assert sign.split()[1:4] == ["3", "3", "2"]  # gold, pred, tp


def test_no_note_text_in_outputs(evaluated: tuple[dict[str, object], Path, FakeTagger]) -> None:
    _, out_dir, _ = evaluated
    for name in ("scores.json", "predictions.jsonl", "per_type.txt"):
        content = (out_dir / name).read_text(encoding="utf-8")
        for word in ("Aspirin", "chest", "liver", "denied"):
            assert word not in content, (name, word)


def test_perfect_tagger_scores_one(tiny_corpus: Path, tmp_path: Path) -> None:
    docs = [d for d in read_corpus(tiny_corpus) if d.doc_id == "1001"]
    result = evaluate_tagger(FakeTagger({d.text: d.mentions for d in docs}), docs, tmp_path / "e")
    assert result["strict"]["f1"] == 1.0 and result["macro_f1"] == 1.0
    assert result["token_level"]["seqeval"]["f1"] == 1.0


def test_rejects_empty_and_out_of_range(tiny_corpus: Path, tmp_path: Path) -> None:
    docs = read_corpus(tiny_corpus)
    tagger = FakeTagger({d.text: d.mentions for d in docs})
    with pytest.raises(ValueError, match="empty"):
        evaluate_tagger(tagger, [], tmp_path / "e")
    short = [d for d in docs if d.doc_id == "1003"]
    bad = FakeTagger({short[0].text: (Span(0, 999, "Sex"),)}, perturbed={})
    with pytest.raises(ValueError, match=r"0-999 \(Sex\) outside document 1003"):
        evaluate_tagger(bad, short, tmp_path / "e")

"""The UDF's pandas side without Spark: statuses, micro-batches, error capture, device choice."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from fake_taggers import RecordingArtifact
from hypothesis import given
from hypothesis import strategies as st

from medner_udf.extraction.executor import (
    MODEL_CACHE,
    TaskConfig,
    choose_device,
    micro_batches,
    tag_frame,
    write_batches,
)
from medner_udf.extraction.schemas import note_hash
from medner_udf.taggers.base import Tagger
from medner_udf.taggers.gazetteer import GazetteerTagger
from medner_udf.text.types import Entity

TAGGER = GazetteerTagger.from_terms([("fever", "Sign_symptom"), ("aspirin", "Medication")])
CFG = TaskConfig(artifact="unused", model_name="g", model_version="1", run_id="r1", batch_size=2)


def frame(rows: Sequence[tuple[str | None, str | None, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "record_id": [r[0] for r in rows],
            "text": [r[1] for r in rows],
            "note_hash": [note_hash(r[1]) for r in rows],
            "action": [r[2] for r in rows],
            "n_rows": [2 if r[2] == "duplicate" else 1 for r in rows],
        }
    )


def test_every_row_gets_one_status_and_entities_match_the_note() -> None:
    rows = [
        ("a", "Fever; aspirin\r\ngiven.\x00", "tag"),
        ("b", None, "tag"),
        ("c", " \t\n", "tag"),
        ("d", "fever \ud800 here", "tag"),
        ("e", "fever", "skip"),
        ("f", "fever", "duplicate"),
        (None, "fever", "null_id"),
    ]
    out = tag_frame(frame(rows), CFG, tagger=TAGGER)
    assert list(out.record_id) == ["a", "b", "c", "d", "e", "f", None]
    assert list(out.status) == ["ok", "empty", "empty", "error", "skipped", "error", "error"]
    assert out.error[3] == "note is not valid Unicode: unpaired surrogate at offset 6"
    assert out.error[5] == "duplicate record_id: 2 input rows share it; none was tagged"
    ents = out.entities[0]
    assert [(e["text"], e["label"]) for e in ents] == [("Fever", "Sign_symptom"), ("aspirin", "Medication")]
    assert all(rows[0][1] is not None and rows[0][1][e["begin"] : e["end"]] == e["text"] for e in ents)
    assert list(out.n_entities) == [2, 0, 0, 0, 0, 0, 0]


class _Exploding(Tagger):
    """Fails on any note holding the word 'boom' and quotes it, as careless models do."""

    kind = "exploding"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.batch_sizes: list[int | None] = []

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> Tagger:
        return self

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        self.batches.append(len(texts))
        self.batch_sizes.append(batch_size)
        for t in texts:
            if "boom" in t:
                raise ValueError(f"cannot tag {t!r}")
        return [[Entity(0, 1, t[0], "X", 0.5)] for t in texts]

    def save(self, directory: Path | str) -> Path:
        raise NotImplementedError

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> Tagger:
        raise NotImplementedError


def test_one_failing_note_becomes_an_error_row_without_its_text() -> None:
    secret = "patient Jane boom Doe"
    rows = [("a", "ok note", "tag"), ("b", secret, "tag"), ("c", "fine too", "tag")]
    tagger = _Exploding()
    out = tag_frame(frame(rows), CFG, tagger=tagger)
    assert list(out.status) == ["ok", "error", "ok"]
    assert out.error[1] == f"ValueError while tagging a note of {len(secret)} characters"
    assert "Jane" not in out.error[1]
    assert max(tagger.batches) <= CFG.batch_size


@given(st.lists(st.integers(0, 500), max_size=60), st.integers(1, 8), st.integers(1, 900))
def test_micro_batches_cover_every_note_once_within_bounds(lengths: list[int], size: int, chars: int) -> None:
    batches = micro_batches(lengths, size, chars)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)  # shortest first
    for b in batches:
        assert len(b) <= size
        assert len(b) == 1 or sum(lengths[i] for i in b) <= chars


def test_device_choice_prefers_the_spark_gpu_then_cuda_then_cpu() -> None:
    assert choose_device(["3"], cuda_available=True) == "cuda:3"
    assert choose_device([], cuda_available=True) == "cuda"
    assert choose_device([], cuda_available=False) == "cpu"
    with pytest.raises(RuntimeError, match="GPU address '1'"):
        choose_device(["1"], cuda_available=False)


def writer_config(artifact: RecordingArtifact, tables: Path, run_id: str) -> TaskConfig:
    """A ``write_batches`` config that writes the three tables under ``tables``."""
    return TaskConfig(
        artifact=str(artifact.path),
        model_name="g",
        model_version="1",
        run_id=run_id,
        entities_uri=str(tables / "entities"),
        status_uri=str(tables / "record_status"),
        relations_uri=str(tables / "relations"),
    )


def test_writer_streams_files_and_loads_the_model_once(
    tmp_path: Path, recording_artifact: RecordingArtifact
) -> None:
    MODEL_CACHE.clear()
    cfg = writer_config(recording_artifact, tmp_path, "r9")
    batches = [frame([(f"id{i}", "fever", "tag"), (f"x{i}", "none", "skip")]) for i in range(5)]
    written = pd.concat(list(write_batches(iter(batches), cfg)))
    assert len(recording_artifact.calls("load")) == 1
    assert [c["notes"] for c in recording_artifact.calls("tag")] == [1] * 5  # skipped notes never reach it
    assert dict(zip(written.table, written.num_records, strict=True)) == {"entities": 5, "record_status": 10}
    ent = pd.read_parquet(tmp_path / "entities" / written.path[written.table == "entities"].iloc[0])
    assert sorted(ent.record_id) == [f"id{i}" for i in range(5)] and set(ent.run_id) == {"r9"}


def test_writer_hands_memory_back_after_each_batch_before_the_next_arrives(
    tmp_path: Path, recording_artifact: RecordingArtifact, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medner_udf.extraction import executor

    served = 0

    def batches() -> Iterator[pd.DataFrame]:
        nonlocal served
        for i in range(3):
            served += 1
            yield frame([(f"id{i}", "fever", "tag")])

    released_after: list[int] = []
    monkeypatch.setattr(executor, "_release_memory", lambda: released_after.append(served))
    cfg = writer_config(recording_artifact, tmp_path, "r8")
    list(write_batches(batches(), cfg))
    # After each batch (so Arrow's pool does not carry it under the next batch's peak), then at the end.
    assert released_after == [1, 2, 3, 3]


def test_the_tagger_gets_the_configured_forward_batch_size_also_when_retrying_one_by_one() -> None:
    rows = [("a", "ok note", "tag"), ("b", "boom", "tag")]
    tagger = _Exploding()
    tag_frame(frame(rows), replace(CFG, tagger_batch_size=256), tagger=tagger)
    assert tagger.batch_sizes == [256, 256, 256]  # the batch, then each note alone
    tagger = _Exploding()
    tag_frame(frame(rows[:1]), CFG, tagger=tagger)
    assert tagger.batch_sizes == [None]  # unset: the tagger's own default
    with pytest.raises(ValueError, match="tagger_batch_size"):
        replace(CFG, tagger_batch_size=0)


class _ListAccumulator:
    """What write_batches needs of a Spark accumulator: ``add``."""

    def __init__(self) -> None:
        self.value: list[dict[str, object]] = []

    def add(self, records: list[dict[str, object]]) -> None:
        self.value.extend(records)


def test_write_batches_reports_the_tasks_rows_characters_seconds_and_memory(
    tmp_path: Path, recording_artifact: RecordingArtifact
) -> None:
    from medner_udf.extraction.task_stats import summarise

    MODEL_CACHE.clear()
    cfg = writer_config(recording_artifact, tmp_path, "r1")
    acc = _ListAccumulator()
    batches = [frame([("a", "no fever", "tag"), ("b", None, "null_id")])]
    batches.append(frame([("c", "fever and aspirin", "skip"), ("d", "x" * 1000, "tag")]))
    list(write_batches(iter(batches), cfg, stats=acc))
    [record] = acc.value
    assert (record["rows"], record["tagged"], record["characters"]) == (4, 2, 1008)
    assert record["partition"] == -1  # outside Spark
    assert float(record["end_rss_mib"]) > 0 and float(record["seconds"]) >= 0
    if record["peak_reset"]:
        assert float(record["peak_rss_mib"]) >= float(record["end_rss_mib"]) * 0.5
    slower = float(record["seconds"]) + 100.0  # another task, whatever this one took on a busy machine
    summary = summarise([*acc.value, dict(record, seconds=slower, rows=10)])
    assert summary["count"] == 2 and summary["rows"] == {"min": 4, "max": 10}
    assert summary["seconds"]["max"] == pytest.approx(slower, abs=1e-3)

"""The executor side inside Spark workers: output schema, bounded micro-batches, one model load per
worker. Loads and batches are observed through a test tagger that logs its own calls
(tests/fake_taggers.py), not through counters in the product."""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fake_taggers import RecordingArtifact

from medner_udf.extraction.executor import TaskConfig, tag_batches
from medner_udf.extraction.schemas import TAGGED_SCHEMA_DDL, note_hash

pytestmark = pytest.mark.spark

N_NOTES, N_PARTS = 64, 8


def note(i: int) -> str:
    return "fever " * (1 + i % 7)


def notes_frame(spark: Any) -> Any:
    rows = [(f"id{i}", note(i), note_hash(note(i)), "tag", 1) for i in range(N_NOTES)]
    return spark.createDataFrame(
        rows, "record_id string, text string, note_hash string, action string, n_rows long"
    ).repartition(N_PARTS)


def test_tagging_output_schema_and_rows(spark: Any, gazetteer_artifact: Path) -> None:
    cfg = TaskConfig(artifact=str(gazetteer_artifact), model_name="testgaz", model_version="1", batch_size=3)
    out = notes_frame(spark).mapInPandas(functools.partial(tag_batches, cfg=cfg), TAGGED_SCHEMA_DDL)
    assert out.schema.simpleString() == (
        "struct<record_id:string,note_hash:string,status:string,n_entities:int,error:string,"
        "n_chars:bigint,entities:array<struct<begin:int,end:int,text:string,label:string,score:double>>>"
    )
    got = {r["record_id"]: r for r in out.collect()}
    assert len(got) == N_NOTES
    assert got["id3"]["n_entities"] == 4 and got["id3"]["status"] == "ok"
    assert [(e["begin"], e["end"], e["text"]) for e in got["id1"]["entities"]] == [
        (0, 5, "fever"),
        (6, 11, "fever"),
    ]


def test_model_loads_once_per_worker_and_batches_stay_bounded(
    spark: Any, recording_artifact: RecordingArtifact
) -> None:
    max_chars = 40  # notes are 6-42 characters: the character bound cuts batches too
    cfg = TaskConfig(
        artifact=str(recording_artifact.path),
        model_name="rec",
        model_version="1",
        batch_size=3,
        max_batch_chars=max_chars,
    )
    rows = (
        notes_frame(spark).mapInPandas(functools.partial(tag_batches, cfg=cfg), TAGGED_SCHEMA_DDL).collect()
    )
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == N_NOTES

    loads = Counter(c["pid"] for c in recording_artifact.calls("load"))
    tags = recording_artifact.calls("tag")
    # Eight tasks ran on two task slots: reused workers, each loading the model exactly once.
    assert set(loads.values()) == {1}
    assert len(loads) < N_PARTS
    assert {c["pid"] for c in tags} <= set(loads)
    # Every note tagged exactly once, in micro-batches of at most 3 notes and 40 characters
    # (a longer note goes alone).
    assert sum(c["notes"] for c in tags) == N_NOTES
    assert sum(c["chars"] for c in tags) == sum(len(note(i)) for i in range(N_NOTES))
    assert max(c["notes"] for c in tags) == 3
    assert all(c["notes"] == 1 or c["chars"] <= max_chars for c in tags)
    assert any(c["notes"] == 1 and c["chars"] > max_chars for c in tags)

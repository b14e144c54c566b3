"""The UDF inside Spark workers: output schema, bounded micro-batches, one model load per worker."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from medner_udf.extraction.executor import TaskConfig, tag_batches
from medner_udf.extraction.schemas import TAGGED_SCHEMA_DDL, note_hash

pytestmark = pytest.mark.spark

N_NOTES, N_PARTS = 64, 8


def notes_frame(spark: Any) -> Any:
    rows = [
        (f"id{i}", "fever " * (1 + i % 7), note_hash("fever " * (1 + i % 7)), "tag", 1)
        for i in range(N_NOTES)
    ]
    return spark.createDataFrame(
        rows, "record_id string, text string, note_hash string, action string, n_rows long"
    ).repartition(N_PARTS)


def test_tagging_udf_output_schema_and_rows(spark: Any, gazetteer_artifact: Path) -> None:
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


def test_model_loads_once_per_worker_and_batches_stay_bounded(spark: Any, gazetteer_artifact: Path) -> None:
    cfg = TaskConfig(artifact=str(gazetteer_artifact), model_name="testgaz", model_version="1", batch_size=3)

    def probe(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        # Runs in the worker: report which process tagged, and what the installed module's cache saw.
        import os

        from medner_udf.extraction import executor as udf

        udf.reset_batch_stats()
        for frame in batches:
            tagged = udf.tag_frame(frame, cfg)
            yield pd.DataFrame(
                {
                    "pid": [os.getpid()] * len(tagged),
                    "loads": udf.MODEL_CACHE.loads[(udf.resolve_artifact(cfg), udf.task_device())],
                    "max_batch": udf.max_batch_seen(),
                }
            )

    rows = notes_frame(spark).mapInPandas(probe, "pid long, loads long, max_batch long").collect()
    assert len(rows) == N_NOTES
    pids = {r["pid"] for r in rows}
    # Eight tasks ran on two task slots: reused workers, each loading the model exactly once.
    assert len(pids) < N_PARTS
    assert {r["loads"] for r in rows} == {1}
    assert max(r["max_batch"] for r in rows) <= 3

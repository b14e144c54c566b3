"""The extraction job on local[2] against a real S3 server (moto, tests/s3_server.py): input as
Parquet and as a Delta table in a bucket, output tables and model artifact in the bucket too."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from medner_udf.extraction.job import run_extract
from medner_udf.extraction.reading import read_files
from medner_udf.extraction.settings import ExtractSettings
from medner_udf.extraction.sql import run_sql
from medner_udf.extraction.storage import delta_options, filesystem, location
from medner_udf.extraction.tables import open_table

if TYPE_CHECKING:
    from s3_server import S3Server

pytestmark = pytest.mark.spark

NOTES_A = [
    ("n1", "A 45-year-old man had chest pain.\r\nAspirin was given.\rCT showed a mass in the liver."),
    ("n2", None),
    ("n3", "  \n\t "),
    ("dup", "fever"),
    ("dup", "chest pain"),
]
NOTES_B = [(None, "fever without an id"), ("n5", "Nothing to see here."), ("n6", "Fever of 38.5 today.")]
SCHEMA = pa.schema([("record_id", pa.string()), ("text", pa.string())])


def _notes_table(notes: list[tuple[str | None, str | None]]) -> pa.Table:
    return pa.table({"record_id": [n[0] for n in notes], "text": [n[1] for n in notes]}, schema=SCHEMA)


def _frame(uri: str, opts: dict[str, str] | None) -> pd.DataFrame:
    df = open_table(uri, "delta", opts).read().to_pandas()
    return df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def _upload_folder(fs: Any, local: Path, remote: str) -> None:
    for f in local.rglob("*"):
        if f.is_file():
            with fs.open_output_stream(f"{remote}/{f.relative_to(local)}") as out:
                out.write(f.read_bytes())


def _file_requests(requests: list[str], keys: list[str]) -> Counter[str]:
    """HEAD/GET requests per object key (query strings stripped)."""
    counts: Counter[str] = Counter()
    for r in requests:
        method, _, path = r.partition(" ")
        key = path.split("?", 1)[0].lstrip("/")
        if method in ("GET", "HEAD") and key in keys:
            counts[key] += 1
    return counts


@pytest.mark.slow  # five Spark jobs
def test_s3_run_matches_local_scans_input_once_reruns_identically_and_answers_sql(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path, s3_server: S3Server
) -> None:
    opts = s3_server.options
    bucket = s3_server.make_bucket("e2e")
    fs, _ = filesystem(location(f"s3://{bucket}"), opts)

    # The same two Parquet files locally and in the bucket; the model artifact in the bucket too.
    (tmp_path / "notes").mkdir()
    for name, notes in (("part-a.parquet", NOTES_A), ("part-b.parquet", NOTES_B)):
        pq.write_table(_notes_table(notes), tmp_path / "notes" / name)
        pq.write_table(_notes_table(notes), f"{bucket}/notes/{name}", filesystem=fs)
    _upload_folder(fs, gazetteer_artifact, f"{bucket}/models/testgaz/1")

    local = run_extract(
        spark,
        ExtractSettings(
            input=str(tmp_path / "notes"),
            output=str(tmp_path / "out"),
            model=str(gazetteer_artifact),
            batch_size=2,
        ),
    )
    s3_settings = ExtractSettings(
        input=f"s3://{bucket}/notes",
        output=f"s3://{bucket}/out",
        model=f"s3://{bucket}/models/testgaz/1",
        batch_size=2,
        storage_options=opts,
    )
    mark = len(s3_server.requests())
    first = run_extract(spark, s3_settings)
    during_run = s3_server.requests()[mark:]

    # Same rows as the local run (run ids too: same input, same model).
    assert first.run_id == local.run_id and first.status_counts == local.status_counts
    for t in ("entities", "record_status"):
        pd.testing.assert_frame_equal(
            _frame(f"s3://{bucket}/out/{t}", opts), _frame(str(tmp_path / "out" / t), None)
        )

    # One scan: each input file was opened by exactly one task, and the run fetched from it exactly
    # what one read of its two columns (plus the driver's one schema read of the first file) fetches.
    keys = [f"{bucket}/notes/part-a.parquet", f"{bucket}/notes/part-b.parquet"]
    assert first.input_files_read == 2
    mark = len(s3_server.requests())
    pq.read_schema(keys[0], filesystem=fs)
    batch = pa.RecordBatch.from_pydict({"uri": [f"s3://{k}" for k in keys]})
    assert sum(b.num_rows for b in read_files(iter([batch]), ["record_id", "text"], SCHEMA, opts)) == 8
    one_read = _file_requests(s3_server.requests()[mark:], keys)
    assert _file_requests(during_run, keys) == one_read

    # A re-run of the same input is a re-run of the same run and leaves identical tables.
    before = {t: _frame(f"s3://{bucket}/out/{t}", opts) for t in ("entities", "record_status")}
    again = run_extract(spark, s3_settings)
    assert again.rerun and again.run_id == first.run_id
    for t, frame in before.items():
        pd.testing.assert_frame_equal(_frame(f"s3://{bucket}/out/{t}", opts), frame)

    # A job that dies before its commit leaves the S3 tables as they were.
    delta_in = f"s3://{bucket}/notes_delta"
    changed = [(rid, "Aspirin only." if rid == "n5" else text) for rid, text in NOTES_A + NOTES_B]
    write_deltalake(delta_in, _notes_table(changed), storage_options=delta_options(location(delta_in), opts))
    versions = {t: open_table(f"s3://{bucket}/out/{t}", "delta", opts).version() for t in before}

    def boom() -> None:
        raise RuntimeError("injected failure before the commit")

    incremental = ExtractSettings(**{**s3_settings.__dict__, "input": delta_in})
    with pytest.raises(RuntimeError, match="injected"):
        run_extract(spark, incremental, before_commit=boom)
    for t, frame in before.items():
        assert open_table(f"s3://{bucket}/out/{t}", "delta", opts).version() == versions[t]
        pd.testing.assert_frame_equal(_frame(f"s3://{bucket}/out/{t}", opts), frame)

    # Incremental run from the Delta input: only the changed note is tagged again.
    third = run_extract(spark, incremental)
    assert not third.rerun
    rows = run_sql(
        spark,
        f"s3://{bucket}/out",
        f"SELECT record_id, status FROM record_status WHERE run_id = '{third.run_id}' AND record_id IS NOT NULL",
        opts,
    ).collect()
    latest = {r["record_id"]: r["status"] for r in rows}
    assert latest["n5"] == "ok"
    assert latest["n1"] == latest["n3"] == latest["n6"] == "skipped"
    assert latest["n2"] == "empty"  # a null note has no hash to compare
    # SQL over the S3 tables sees the new entities of n5 and the untouched ones of n1.
    got = run_sql(
        spark,
        f"s3://{bucket}/out",
        "SELECT record_id, text FROM entities WHERE record_id IN ('n1', 'n5') ORDER BY record_id, begin",
        opts,
    ).collect()
    assert [(r["record_id"], r["text"]) for r in got] == [
        ("n1", "man"),
        ("n1", "chest pain"),
        ("n1", "Aspirin"),
        ("n1", "CT"),
        ("n1", "mass"),
        ("n1", "liver"),
        ("n5", "Aspirin"),
    ]

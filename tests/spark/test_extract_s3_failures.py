"""Storage that fails while the extraction job runs: the job stops with one clear ``StorageError``
(the location, never a secret, note text or an SDK traceback), the tables stay at their version,
and once the storage answers again the next run completes.

The outage is the S3 server's switch (tests/s3_server.py): every request answered 503 from the
first data file a task writes until the test restores it; moto's buckets live on in its memory, as
a real store's data outlives an outage. Each test has a server of its own, so that an outage never
reaches another test's bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medner_udf.cli.reporting import expected, reported
from medner_udf.errors import StorageError
from medner_udf.extraction.job import run_extract
from medner_udf.extraction.settings import ExtractSettings
from medner_udf.extraction.storage import filesystem, location, storage_failure
from medner_udf.extraction.tables import Changes, open_table

if TYPE_CHECKING:
    from s3_server import S3Server

SCHEMA = pa.schema([("record_id", pa.string()), ("text", pa.string())])
# Distinctive note text: none of it may appear in an error.
NOTE_WORDS = "Zebulon Quartermaine"
FIRST = [("a1", f"{NOTE_WORDS} had chest pain and fever."), ("a2", "CT showed a mass in the liver.")]
SECOND = [("b1", f"{NOTE_WORDS} was given aspirin."), ("b2", "Fever of 38.5 today.")]
TABLES = ("entities", "relations", "record_status")


@pytest.fixture
def own_s3(tmp_path: Path) -> Iterator[S3Server]:
    from s3_server import S3Server

    server = S3Server(tmp_path / "requests.log")
    try:
        yield server
    finally:
        server.stop()


def _notes(notes: list[tuple[str, str]]) -> pa.Table:
    return pa.table({"record_id": [n[0] for n in notes], "text": [n[1] for n in notes]}, schema=SCHEMA)


def _state(root: str, opts: dict[str, str]) -> dict[str, tuple[int | None, pd.DataFrame | None]]:
    out: dict[str, tuple[int | None, pd.DataFrame | None]] = {}
    for name in TABLES:
        table = open_table(f"{root}/{name}", "delta", opts)
        frame = None
        if table.files():
            df = table.read().to_pandas()
            frame = df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)
        out[name] = (table.version(), frame)
    return out


def _assert_same_state(got: dict[str, Any], want: dict[str, Any]) -> None:
    for name in TABLES:
        assert got[name][0] == want[name][0], name
        if want[name][1] is None:
            assert got[name][1] is None, name
        else:
            pd.testing.assert_frame_equal(got[name][1], want[name][1])


def _assert_clean_message(error: StorageError, server: S3Server, uri: str) -> str:
    """The CLI's rendering of ``error`` (``Error:`` line + hint), checked and returned."""
    shown = expected(error)
    assert shown is error
    text = reported(error).format_message()
    assert uri in text
    for leak in (server.secret_key, NOTE_WORDS, "Traceback", "OSError", "PythonException", "botocore"):
        assert leak not in text, leak
    assert "re-run" in text
    return text


@pytest.mark.spark
def test_outage_while_tasks_write_fails_cleanly_keeps_tables_and_the_next_run_completes(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path, own_s3: S3Server
) -> None:
    opts = own_s3.impatient_options
    bucket = own_s3.make_bucket("outage")
    fs, _ = filesystem(location(f"s3://{bucket}"), opts)
    pq.write_table(_notes(FIRST), f"{bucket}/notes/part-a.parquet", filesystem=fs)
    settings = ExtractSettings(
        input=f"s3://{bucket}/notes",
        output=f"s3://{bucket}/out",
        model=str(gazetteer_artifact),
        batch_size=2,
        storage_options=opts,
    )
    run_extract(spark, settings)
    before = _state(f"s3://{bucket}/out", opts)

    # New notes; the storage goes down at the first data file a task writes.
    pq.write_table(_notes(SECOND), f"{bucket}/notes/part-b.parquet", filesystem=fs)
    own_s3.trip("PUT|POST", rf"^/{bucket}/out/(entities|relations|record_status)/part-")
    with pytest.raises(StorageError) as caught:
        run_extract(spark, settings)
    assert own_s3.is_down  # the outage, not something else, stopped the run
    text = _assert_clean_message(caught.value, own_s3, f"s3://{bucket}/out")
    assert "failed while the job ran" in text

    # The storage is back (same objects): the tables are as before the failed run, and the next run
    # completes with the new records.
    own_s3.restore()
    _assert_same_state(_state(f"s3://{bucket}/out", opts), before)
    summary = run_extract(spark, settings)
    status = open_table(f"s3://{bucket}/out/record_status", "delta", opts).read().to_pandas()
    latest = status[status["run_id"] == summary.run_id].set_index("record_id")["status"].to_dict()
    assert latest == {"a1": "skipped", "a2": "skipped", "b1": "ok", "b2": "ok"}
    entities = open_table(f"s3://{bucket}/out/entities", "delta", opts).read().to_pandas()
    assert {"b1", "b2"} <= set(entities["record_id"])
    assert open_table(f"s3://{bucket}/out/entities", "delta", opts).version() == before["entities"][0] + 1


def test_outage_at_the_commit_raises_storage_error_and_commits_nothing(own_s3: S3Server) -> None:
    """The driver's side: delta-rs's commit (and pyarrow's footer read) meet the outage."""
    opts = own_s3.impatient_options
    root = f"s3://{own_s3.make_bucket('commit')}/t"
    table = open_table(root, "delta", opts)
    seed = table.write_file("seed.parquet", _notes([("s", "x")]))
    table.commit(Changes(adds=[seed]), SCHEMA, {})
    more = table.write_file("more.parquet", _notes([("m", "y")]))
    own_s3.outage()
    try:
        for attempt in (
            lambda: open_table(root, "delta", opts).commit(Changes(adds=[more]), SCHEMA, {}),
            lambda: open_table(root, "delta", opts).read(),
        ):
            with pytest.raises(StorageError) as caught:
                attempt()
            text = _assert_clean_message(caught.value, own_s3, root)
            assert own_s3.endpoint not in text.split(root)[0]  # the table comes first, named once
    finally:
        own_s3.restore()
    after = open_table(root, "delta", opts)
    assert after.version() == 0 and after.read()["record_id"].to_pylist() == ["s"]


class PythonException(Exception):  # noqa: N818 - the name is pyspark's
    """Stands for pyspark's: what a Spark task that failed in its Python worker raises on the driver."""


def test_storage_failure_maps_storage_errors_and_leaves_others_alone() -> None:
    out = location("s3://bucket/out", "output")
    notes = location("s3://bucket/notes", "input")
    opts = {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_REGION": "eu-west-1"}
    where = {"output": out, "input": notes}

    failure = storage_failure(
        OSError("When reading bucket/notes/part-0.parquet: AWS Error NETWORK_CONNECTION key s3cr3t-value"),
        where,
        opts,
    )
    assert isinstance(failure, StorageError) and failure.hint is not None
    assert str(failure).startswith("input s3://bucket/notes failed while the job ran: ")
    assert "s3cr3t-value" not in str(failure) and "***" in str(failure)

    task = PythonException(
        "An exception was thrown from the Python worker.\nTraceback (most recent call last):\n"
        '  File "executor.py", line 1, in write\nOSError: When uploading part for key '
        "'out/entities/part-1.parquet' in bucket 'bucket': AWS Error SERVICE_UNAVAILABLE: injected\n"
    )
    failure = storage_failure(task, where, opts)
    assert failure is not None and str(failure).startswith("output s3://bucket/out failed while the job ran")
    assert "Traceback" not in str(failure) and "executor.py" not in str(failure)

    refused = storage_failure(OSError("AWS Error ACCESS_DENIED (HTTP status 403)"), where, opts)
    assert refused is not None and "refused the credentials" in str(refused)
    # A part file whose name holds "403" is not a refusal.
    odd = storage_failure(OSError("timeout writing out/part-a403b.parquet"), where, opts)
    assert odd is not None and "refused" not in str(odd)

    # Not storage failures: a bug in a task, a plain ValueError, an error medner already worded.
    bug = PythonException("Traceback (most recent call last):\nZeroDivisionError: division by zero\n")
    assert storage_failure(bug, where, opts) is None
    assert storage_failure(ValueError("bad"), where, opts) is None
    assert storage_failure(StorageError("already clear"), where, opts) is None

    from deltalake.exceptions import CommitFailedError, DeltaError

    assert storage_failure(DeltaError("Generic S3 error: error sending request"), where, opts) is not None
    assert storage_failure(DeltaError("Schema mismatch: column x"), where, opts) is None
    assert storage_failure(CommitFailedError("version 3 already exists"), where, opts) is None

"""Two whole extraction runs on one output at once, locally and on S3 (moto).

Each run is ``run_extract`` in a thread of its own on the shared session; a barrier in
``before_commit`` holds both until each has written its files and planned its commits on the same
table versions, so their commits race every time. The end state must hold both runs' rows, or
one run must fail with a ``ConflictError`` that says a re-run is safe, having committed nothing:
never a lost commit, a run's rows twice, or entities committed without their status rows.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from medner_udf.errors import ConflictError
from medner_udf.extraction.job import RunSummary, run_extract
from medner_udf.extraction.settings import ExtractSettings
from medner_udf.extraction.storage import filesystem, location
from medner_udf.extraction.tables import open_table

if TYPE_CHECKING:
    from s3_server import S3Server

pytestmark = pytest.mark.spark

SCHEMA = pa.schema([("record_id", pa.string()), ("text", pa.string())])
SEED = [("s1", "Fever and chest pain."), ("s2", "CT of the liver.")]
FEED_A = [("a1", "The man had chest pain."), ("a2", "Aspirin was given for fever.")]
FEED_B = [("b1", "CT showed a mass."), ("b2", "Fever of 38.5 today.")]
ENTITY_KEY = ["record_id", "model_version", "begin", "end", "label"]


def _write_feed(path: str, notes: list[tuple[str, str]], fs: Any = None) -> None:
    table = pa.table({"record_id": [n[0] for n in notes], "text": [n[1] for n in notes]}, schema=SCHEMA)
    if fs is None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, filesystem=fs)


def _race(spark: Any, settings: list[ExtractSettings]) -> list[RunSummary | BaseException]:
    """Run every settings at once; each waits for the others before its first commit."""
    barrier = threading.Barrier(len(settings), timeout=300)
    results: list[RunSummary | BaseException] = [RuntimeError("did not finish")] * len(settings)

    def one(i: int) -> None:
        try:
            results[i] = run_extract(spark, settings[i], before_commit=barrier.wait)
        except BaseException as exc:  # reported below, whatever it is
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(settings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    return results


def _tables(root: str, opts: dict[str, str] | None) -> dict[str, pd.DataFrame]:
    return {
        name: open_table(f"{root}/{name}", "delta", opts).read().to_pandas()
        for name in ("entities", "record_status")
    }


def _assert_contracts(tables: dict[str, pd.DataFrame]) -> None:
    """No entity key twice, every record once per run, and every run's entities with its status."""
    entities, status = tables["entities"], tables["record_status"]
    assert not entities.duplicated(ENTITY_KEY).any(), entities[entities.duplicated(ENTITY_KEY, keep=False)]
    assert not status.duplicated(["run_id", "record_id"]).any()
    assert set(entities["run_id"]) <= set(status["run_id"])  # no entities without their status


def _failed_cleanly(result: RunSummary | BaseException) -> ConflictError:
    assert isinstance(result, ConflictError), repr(result)
    assert result.hint is not None and "re-run" in result.hint and "safe" in result.hint
    return result


def _settings(notes: str, output: str, model: Path, opts: dict[str, str] | None) -> ExtractSettings:
    return ExtractSettings(
        input=notes, output=output, model=str(model), batch_size=2, storage_options=opts or {}
    )


def _check_disjoint_and_same_feeds(
    spark: Any, root: str, model: Path, opts: dict[str, str] | None, put: Callable[[str, list[Any]], str]
) -> None:
    seed = run_extract(spark, _settings(put("seed", SEED), root, model, opts))

    # Two feeds of different records: both runs land, each with all its rows.
    feed_a, feed_b = put("a", FEED_A), put("b", FEED_B)
    first, second = _race(spark, [_settings(f, root, model, opts) for f in (feed_a, feed_b)])
    assert isinstance(first, RunSummary) and isinstance(second, RunSummary), (first, second)
    tables = _tables(root, opts)
    _assert_contracts(tables)
    status = tables["record_status"]
    runs = {r.run_id: r for r in (seed, first, second)}
    assert Counter(status["run_id"]) == {rid: 2 for rid in runs}
    by_run = status.groupby("run_id")["record_id"].apply(set).to_dict()
    assert by_run[first.run_id] == {"a1", "a2"} and by_run[second.run_id] == {"b1", "b2"}
    entities = tables["entities"]
    for run in (first, second):
        assert (entities["run_id"] == run.run_id).sum() == run.n_entities_added > 0

    # The same feed twice at once (one run id): one run lands, the other fails before committing
    # anything; its re-run is a re-run of that run and changes nothing.
    feed_c = put("c", [("c1", "Chest pain again."), ("c2", "A mass and fever.")])
    results = _race(spark, [_settings(feed_c, root, model, opts)] * 2)
    landed = [r for r in results if isinstance(r, RunSummary)]
    assert len(landed) == 1, results
    error = _failed_cleanly(next(r for r in results if not isinstance(r, RunSummary)))
    assert "entities" in str(error)  # its first commit failed: nothing of it was committed
    tables = _tables(root, opts)
    _assert_contracts(tables)
    run_c = tables["record_status"][tables["record_status"]["run_id"] == landed[0].run_id]
    assert sorted(run_c["record_id"]) == ["c1", "c2"]
    again = run_extract(spark, _settings(feed_c, root, model, opts))
    assert again.rerun and again.run_id == landed[0].run_id
    after = _tables(root, opts)
    for name, frame in tables.items():
        cols = sorted(frame.columns)
        pd.testing.assert_frame_equal(
            after[name][cols].sort_values(cols).reset_index(drop=True),
            frame[cols].sort_values(cols).reset_index(drop=True),
        )


def test_two_runs_at_once_on_a_local_output_both_land_or_one_fails_cleanly(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path
) -> None:
    def put(name: str, notes: list[Any]) -> str:
        _write_feed(str(tmp_path / "feeds" / name / "part-0.parquet"), notes)
        return str(tmp_path / "feeds" / name)

    _check_disjoint_and_same_feeds(spark, str(tmp_path / "out"), gazetteer_artifact, None, put)


@pytest.mark.slow  # eight Spark jobs against the S3 server
def test_two_runs_at_once_on_an_s3_output_both_land_or_one_fails_cleanly(
    spark: Any, gazetteer_artifact: Path, s3_server: S3Server
) -> None:
    opts = s3_server.options
    bucket = s3_server.make_bucket("concurrent")
    fs, _ = filesystem(location(f"s3://{bucket}"), opts)

    def put(name: str, notes: list[Any]) -> str:
        _write_feed(f"{bucket}/feeds/{name}/part-0.parquet", notes, fs)
        return f"s3://{bucket}/feeds/{name}"

    _check_disjoint_and_same_feeds(spark, f"s3://{bucket}/out", gazetteer_artifact, opts, put)
    # Why no commit was lost without a locking provider: delta-rs 1.6 claims each log entry with a
    # put-if-absent (If-None-Match: *), which S3 (and moto) refuse with 412 when the entry exists.
    commits = [
        (p, h) for p, h in s3_server.puts() if p.startswith(f"/{bucket}/out/") and "/_delta_log/0" in p
    ]
    assert commits and all(h == "*" for _, h in commits), commits


def test_two_runs_of_overlapping_records_at_once_never_write_a_record_twice(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path
) -> None:
    """Different feeds (so different run ids) that share a record, on a new output: both runs would
    add that record's rows, and both create the tables."""
    out = str(tmp_path / "out")
    feeds = []
    for name, notes in (
        ("x", [*FEED_A, ("shared", "Fever and CT.")]),
        ("y", [*FEED_B, ("shared", "Fever and CT.")]),
    ):
        _write_feed(str(tmp_path / "feeds" / name / "part-0.parquet"), notes)
        feeds.append(str(tmp_path / "feeds" / name))
    results = _race(spark, [_settings(f, out, gazetteer_artifact, None) for f in feeds])
    landed = [r for r in results if isinstance(r, RunSummary)]
    assert len(landed) == 1, results
    _failed_cleanly(next(r for r in results if not isinstance(r, RunSummary)))
    tables = _tables(out, None)
    _assert_contracts(tables)
    assert set(tables["record_status"]["run_id"]) == {landed[0].run_id}
    shared = tables["entities"][tables["entities"]["record_id"] == "shared"]
    assert len(shared) > 0 and set(shared["run_id"]) == {landed[0].run_id}

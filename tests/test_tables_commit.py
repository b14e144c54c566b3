"""Table commits: files become visible only with the commit, removals are copy-on-write, and the
Delta table is readable through delta-rs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from medner_udf.extraction.tables import (
    Changes,
    DataFile,
    TableError,
    detect_format,
    open_table,
    plan_row_removal,
)

SCHEMA = pa.schema([("record_id", pa.string()), ("n", pa.int64())])


def put(folder: Path, name: str, ids: list[str]) -> DataFile:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"record_id": ids, "n": list(range(len(ids)))}, schema=SCHEMA)
    pq.write_table(table, folder / name)
    return DataFile(name, os.path.getsize(folder / name), len(ids), int(time.time() * 1000))


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_uncommitted_files_are_invisible_and_removal_rewrites_only_touched_files(
    tmp_path: Path, fmt: str
) -> None:
    table = open_table(tmp_path / "t", fmt)
    assert not table.exists() and table.files() == []
    f1 = put(tmp_path / "t", "a.parquet", ["x", "y"])
    f2 = put(tmp_path / "t", "b.parquet", ["z"])
    put(tmp_path / "t", "orphan.parquet", ["ghost"])  # written, never committed
    table.commit(Changes(adds=[f1, f2]), SCHEMA, {"medner.run_id": "r1"})
    assert detect_format(tmp_path / "t") == fmt
    assert sorted(table.read()["record_id"].to_pylist()) == ["x", "y", "z"]

    changes = plan_row_removal(table, ["record_id"], lambda t: pc.equal(t["record_id"], "y"), SCHEMA, "cow")
    assert changes.removes == ["a.parquet"] and len(changes.adds) == 1  # b.parquet untouched
    assert sorted(table.read()["record_id"].to_pylist()) == ["x", "y", "z"]  # not committed yet
    version = table.version()
    table.commit(changes, SCHEMA, {"medner.run_id": "r2"})
    assert table.version() == (version or 0) + 1
    assert sorted(table.read()["record_id"].to_pylist()) == ["x", "z"]


def test_delta_commit_is_one_version_readable_by_delta_rs(tmp_path: Path) -> None:
    table = open_table(tmp_path / "d", "delta")
    table.commit(Changes(adds=[put(tmp_path / "d", "a.parquet", ["x"])]), SCHEMA, {"medner.run_id": "r1"})
    table.commit(
        Changes(adds=[put(tmp_path / "d", "b.parquet", ["y", "z"])], removes=["a.parquet"]),
        SCHEMA,
        {"medner.run_id": "r2"},
    )
    dt = DeltaTable(str(tmp_path / "d"))
    assert dt.version() == 1
    assert sorted(dt.to_pyarrow_table()["record_id"].to_pylist()) == ["y", "z"]
    assert dt.history(1)[0]["medner.run_id"] == "r2"
    assert DeltaTable(str(tmp_path / "d"), version=0).to_pyarrow_table()["record_id"].to_pylist() == ["x"]


def test_parquet_manifest_rejects_unknown_files(tmp_path: Path) -> None:
    table = open_table(tmp_path / "p", "parquet")
    with pytest.raises(TableError, match="does not exist"):
        table.commit(Changes(adds=[DataFile("missing.parquet", 1, 1, 0)]), SCHEMA, {})
    with pytest.raises(TableError, match="not in"):
        table.commit(Changes(removes=["never.parquet"]), SCHEMA, {})
    with pytest.raises(TableError, match="'csv'"):
        open_table(tmp_path / "c", "csv")


@pytest.mark.parametrize("fmt", ["delta", "parquet"])
def test_a_table_from_before_a_new_column_gains_it_and_old_rows_read_null(tmp_path: Path, fmt: str) -> None:
    wider = pa.schema([*SCHEMA, ("assertion", pa.string())])
    table = open_table(tmp_path / "t", fmt)
    table.commit(Changes(adds=[put(tmp_path / "t", "old.parquet", ["a", "b"])]), SCHEMA, {})
    added = table.add_columns(wider)
    assert added == (["assertion"] if fmt == "delta" else [])
    assert table.add_columns(wider) == []  # once only
    new = pa.table({"record_id": ["c"], "n": [9], "assertion": ["absent"]}, schema=wider)
    pq.write_table(new, tmp_path / "t" / "new.parquet")
    size = os.path.getsize(tmp_path / "t" / "new.parquet")
    table.commit(Changes(adds=[DataFile("new.parquet", size, 1, int(time.time() * 1000))]), wider, {})
    rows = table.read().sort_by("record_id").to_pydict()
    assert rows["assertion"] == [None, None, "absent"]
    if fmt == "delta":
        dt = DeltaTable(str(tmp_path / "t"))
        assert dt.schema().to_arrow().names == ["record_id", "n", "assertion"]
        got = dt.to_pyarrow_table().sort_by("record_id").column("assertion").to_pylist()
        assert got == [None, None, "absent"]

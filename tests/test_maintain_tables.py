"""``medner maintain``: compaction keeps the rows, vacuum honours the retention, short retentions
need an explicit flag."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from click.testing import CliRunner

from medner_udf.cli.main import main
from medner_udf.extraction.maintenance import RetentionError, maintain_tables
from medner_udf.extraction.tables import Changes, open_table, plan_row_removal

SCHEMA = pa.schema([("record_id", pa.string()), ("model_version", pa.string()), ("run_id", pa.string())])


def _table_with_history(root: Path) -> tuple[list[str], set[str]]:
    """entities: 6 one-row commits, one row removed again (copy-on-write), one orphan file."""
    table = open_table(root / "entities", "delta")
    for i in range(6):
        rows = pa.table(
            {"record_id": [f"r{i}"], "model_version": ["1"], "run_id": [f"run{i}"]}, schema=SCHEMA
        )
        table.commit(Changes(adds=[table.write_file(f"part-{i}.parquet", rows)]), SCHEMA, {})
    drop = plan_row_removal(table, ["record_id"], lambda t: pc.equal(t["record_id"], "r3"), SCHEMA, "cow")
    table.commit(drop, SCHEMA, {})
    orphan = pa.table({"record_id": ["ghost"], "model_version": ["1"], "run_id": ["dead"]}, schema=SCHEMA)
    table.write_file("part-orphan.parquet", orphan)  # a job that died before its commit
    return sorted(table.read()["record_id"].to_pylist()), {"part-3.parquet", "part-orphan.parquet"}


def _on_disk(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("*.parquet")}


def test_maintain_compacts_keeps_rows_and_vacuums_only_past_the_retention(tmp_path: Path) -> None:
    rows, dead = _table_with_history(tmp_path)
    assert len(open_table(tmp_path / "entities", "delta").files()) == 5

    report = maintain_tables(str(tmp_path))
    (rep,) = report.tables
    assert (rep.files_before, rep.files_after) == (5, 1)
    assert rep.files_vacuumed == 0 and dead <= _on_disk(tmp_path / "entities")  # all younger than 7 days
    table = open_table(tmp_path / "entities", "delta")
    assert sorted(table.read()["record_id"].to_pylist()) == rows

    with pytest.raises(RetentionError, match="shorter than 168 h"):
        maintain_tables(str(tmp_path), retention_hours=0)
    assert dead <= _on_disk(tmp_path / "entities")

    # A 1 h retention deletes the orphan written 3 h ago but keeps the files removed just now
    # (a query that started before their removal may still read them).
    old = time.time() - 3 * 3600
    os.utime(tmp_path / "entities" / "part-orphan.parquet", (old, old))
    maintain_tables(str(tmp_path), retention_hours=1, allow_short_retention=True)
    left = _on_disk(tmp_path / "entities")
    assert "part-orphan.parquet" not in left and "part-3.parquet" in left and len(left) == 7
    # Retention 0 (nothing reads meanwhile): only the live file is left, with every row.
    maintain_tables(str(tmp_path), retention_hours=0, allow_short_retention=True)
    live = {Path(u).name for u in open_table(tmp_path / "entities", "delta").file_uris()}
    assert _on_disk(tmp_path / "entities") == live and len(live) == 1
    assert sorted(open_table(tmp_path / "entities", "delta").read()["record_id"].to_pylist()) == rows


def test_maintain_command_prints_counts_and_refuses_a_short_retention_with_usage_exit(tmp_path: Path) -> None:
    _table_with_history(tmp_path)
    result = CliRunner().invoke(main, ["maintain", "--output", str(tmp_path), "--retention-hours", "1"])
    assert result.exit_code == 2 and "shorter than 168 h" in result.output
    result = CliRunner().invoke(main, ["maintain", "--output", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(t["files_before"], t["files_after"]) for t in report["tables"]] == [(5, 1)]
    result = CliRunner().invoke(main, ["maintain", "--output", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "not a folder holding medner tables" in result.output


def test_clustering_by_record_id_lets_a_point_query_skip_files(tmp_path: Path) -> None:
    import random

    from deltalake import DeltaTable

    table = open_table(tmp_path / "entities", "delta")
    rng = random.Random(3)
    for run in range(6):  # each run's ids spread over the whole range, as changed notes are
        ids = [f"r{rng.randrange(10**6):07d}" for _ in range(3000)]
        rows = pa.table({"record_id": ids, "model_version": ["1"] * 3000, "run_id": [f"run{run}"] * 3000})
        table.commit(Changes(adds=[table.write_file(f"part-{run}.parquet", rows.cast(SCHEMA))]), SCHEMA, {})
    uri = str(tmp_path / "entities")
    probes = [f"r{rng.randrange(10**6):07d}" for _ in range(20)]

    def files_for(record_id: str) -> int:
        return len(DeltaTable(uri).file_uris(file_pruning_predicate=[("record_id", "=", record_id)]))

    assert [files_for(r) for r in probes] == [6] * 20  # every file spans (nearly) every id
    before = sorted(open_table(uri, "delta").read()["record_id"].to_pylist())
    maintain_tables(str(tmp_path), target_size=16 * 1024, cluster_by_record_id=True)
    assert sorted(open_table(uri, "delta").read()["record_id"].to_pylist()) == before
    assert len(DeltaTable(uri).file_uris()) > 6
    assert [files_for(r) for r in probes] == [1] * 20

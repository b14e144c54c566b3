"""The extraction job end to end in local[2]: bad inputs, offsets, idempotency, incremental runs,
model versions, atomicity, and reading the results back through delta-rs and Spark SQL."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from medner_udf.extraction.job import run_extract
from medner_udf.extraction.settings import ExtractError, ExtractSettings
from medner_udf.extraction.sql import run_sql
from medner_udf.extraction.tables import open_table

pytestmark = pytest.mark.spark

NOTE_1 = "A 45-year-old man had chest pain.\r\nAspirin was given.\rCT showed a mass in the liver.\x00\x07"
BIG = "Fever and chest pain again; no mass. " * 30_000  # 1.1 MB, one line, no truncation allowed

NOTES: list[tuple[str | None, str | None]] = [
    ("n1", NOTE_1),
    ("n2", None),
    ("n3", ""),
    ("n4", "  \n\t "),
    ("dup", "fever"),
    ("dup", "chest pain"),
    (None, "fever without an id"),
    ("big", BIG),
    ("n5", "Nothing to see here."),
    ("n6", "Fever of 38.5 today."),
]


def write_notes(folder: Path, notes: Sequence[tuple[str | None, str | None]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table(
        {"record_id": [n[0] for n in notes], "text": [n[1] for n in notes]},
        schema=pa.schema([("record_id", pa.string()), ("text", pa.string())]),
    )
    pq.write_table(table, folder / "part-0.parquet")
    return folder


def settings(tmp: Path, model: Path, **kw: Any) -> ExtractSettings:
    return ExtractSettings(
        input=str(tmp / "notes"), output=str(tmp / "out"), model=str(model), batch_size=2, **kw
    )


def delta_frame(path: Path) -> pd.DataFrame:
    df = DeltaTable(str(path)).to_pandas()
    return df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def status_by_id(out: Path) -> dict[str | None, list[tuple[str, str | None]]]:
    rows: dict[str | None, list[tuple[str, str | None]]] = {}
    for r in delta_frame(out / "record_status").to_dict("records"):
        rows.setdefault(r["record_id"], []).append((r["status"], r["error"]))
    return rows


@pytest.mark.slow  # several Spark jobs, one over a 1 MB note
def test_first_run_gives_every_record_its_status_and_exact_offsets(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path
) -> None:
    write_notes(tmp_path / "notes", NOTES)
    model = tmp_path / "model"  # a path no earlier test loaded: no worker has it cached
    shutil.copytree(gazetteer_artifact, model)
    summary = run_extract(spark, settings(tmp_path, model))

    status = delta_frame(tmp_path / "out" / "record_status")
    assert len(status) == len(NOTES)  # input count == status rows, duplicates and null ids included
    by_id = status_by_id(tmp_path / "out")
    assert by_id["n1"] == [("ok", None)]
    assert by_id["n2"] == by_id["n3"] == by_id["n4"] == [("empty", None)]
    assert [s for s, _ in by_id["dup"]] == ["error", "error"]
    assert all("duplicate record_id" in (e or "") and "fever" not in (e or "") for _, e in by_id["dup"])
    assert by_id[None] == [("error", "record_id is null")]
    assert by_id["big"] == [("ok", None)]
    assert by_id["n5"] == [("ok", None)]
    assert summary.status_counts == {"ok": 4, "empty": 3, "skipped": 0, "error": 3}
    # Each tagging task reports what it did: together every input row, once; tagged notes and
    # their characters are those of the rows planned for tagging (not duplicates or null ids).
    tasks = summary.task_list
    assert summary.tasks["count"] == len(tasks) >= 1
    assert sum(t["rows"] for t in tasks) == len(NOTES)
    tagged = [t for rid, t in NOTES if rid not in (None, "dup")]
    assert sum(t["tagged"] for t in tasks) == len(tagged)
    assert sum(t["characters"] for t in tasks) == sum(len(t or "") for t in tagged)
    assert sorted(t["partition"] for t in tasks) == list(range(len(tasks)))
    assert all(t["peak_rss_mib"] > 0 and t["seconds"] >= 0 for t in tasks)
    # The warm-up pass loaded the model into the workers while the driver planned; the tagging
    # tasks ran in those reused workers and loaded nothing themselves.
    assert [t["model_loads"] for t in tasks] == [0] * len(tasks) and summary.tasks["model_loads"] == 0
    assert "task_list" not in summary.as_dict() and len(
        summary.as_dict(task_details=True)["task_list"]
    ) == len(tasks)

    ents = delta_frame(tmp_path / "out" / "entities")
    texts = {rid: t for rid, t in NOTES if rid is not None and t is not None}
    for r in ents.to_dict("records"):
        assert texts[r["record_id"]][r["begin"] : r["end"]] == r["text"]
    n1 = ents[ents.record_id == "n1"].sort_values("begin")
    assert list(zip(n1.text, n1.label, strict=True)) == [
        ("man", "Sex"),
        ("chest pain", "Sign_symptom"),
        ("Aspirin", "Medication"),
        ("CT", "Diagnostic_procedure"),
        ("mass", "Sign_symptom"),
        ("liver", "Biological_structure"),
    ]
    # The 1 MB note is tagged to its very end: 3 entities per repeat, none lost to truncation.
    assert (ents.record_id == "big").sum() == 3 * 30_000
    assert ents.score.between(0, 1).all()
    assert set(ents.model_version) == {"1"} and set(ents.run_id) == {summary.run_id}
    assert (ents.record_id == "n5").sum() == 0

    # Spark SQL over the same tables, read through the Delta log.
    got = run_sql(
        spark,
        tmp_path / "out",
        "SELECT label, count(*) AS n FROM entities WHERE record_id = 'n1' GROUP BY label ORDER BY label",
    ).collect()
    assert [(r["label"], r["n"]) for r in got] == [
        ("Biological_structure", 1),
        ("Diagnostic_procedure", 1),
        ("Medication", 1),
        ("Sex", 1),
        ("Sign_symptom", 2),
    ]

    # The analyst queries the docs show all run against these tables.
    doc = (Path(__file__).resolve().parents[2] / "docs" / "extraction.md").read_text(encoding="utf-8")
    block = doc.split("```sql\n", 1)[1].split("```", 1)[0]
    queries = [q for q in block.split(";") if q.strip()]
    assert len(queries) == 5
    results = [run_sql(spark, tmp_path / "out", q).collect() for q in queries]
    assert results[0][0]["medication"] == "aspirin"
    assert [(r["record_id"], r["lab_value"]) for r in results[1]] == [("n6", "38.5")]
    assert {(r["record_id"], r["error"]) for r in results[3]} == {
        ("dup", "duplicate record_id: 2 input rows share it; none was tagged"),
        (None, "record_id is null"),
    }


@pytest.mark.slow  # several Spark jobs, one over a 1 MB note
def test_rerun_is_identical_and_incremental_run_retags_only_changed_notes(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path, gazetteer_factory: Callable[[str], Path]
) -> None:
    notes = [("a", "The man had fever."), ("b", "CT of the liver."), ("c", "No findings.")]
    write_notes(tmp_path / "notes", notes)
    s = settings(tmp_path, gazetteer_artifact)
    first = run_extract(spark, s)
    ents1, st1 = delta_frame(tmp_path / "out" / "entities"), delta_frame(tmp_path / "out" / "record_status")
    again = run_extract(spark, s)
    assert again.run_id == first.run_id and again.rerun
    pd.testing.assert_frame_equal(delta_frame(tmp_path / "out" / "entities"), ents1)
    pd.testing.assert_frame_equal(delta_frame(tmp_path / "out" / "record_status"), st1)

    # Note b changes: only b is tagged again, its old entities are replaced, a and c are skipped.
    write_notes(tmp_path / "notes", [notes[0], ("b", "Aspirin for chest pain."), notes[2]])
    third = run_extract(spark, s)
    assert third.run_id != first.run_id and third.run_seq == first.run_seq + 1
    assert third.status_counts == {"ok": 1, "empty": 0, "skipped": 2, "error": 0}
    ents = delta_frame(tmp_path / "out" / "entities")
    assert sorted(ents[ents.record_id == "b"].text) == ["Aspirin", "chest pain"]
    assert set(ents[ents.record_id == "b"].run_id) == {third.run_id}
    assert sorted(ents[ents.record_id == "a"].text) == ["fever", "man"]
    assert len(delta_frame(tmp_path / "out" / "record_status")) == 6  # two runs x three records

    # --full re-tags everything; a new model version adds rows beside version 1's.
    full = run_extract(spark, settings(tmp_path, gazetteer_artifact, full=True))
    assert full.status_counts["ok"] == 3 and full.status_counts["skipped"] == 0
    v2 = gazetteer_factory("2")
    run_extract(spark, settings(tmp_path, v2))
    ents = delta_frame(tmp_path / "out" / "entities")
    per_version = ents.groupby("model_version").size().to_dict()
    assert per_version == {"1": 4, "2": 4}


def test_failure_before_commit_leaves_both_tables_unchanged(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path
) -> None:
    write_notes(tmp_path / "notes", [("a", "The man had fever.")])
    s = settings(tmp_path, gazetteer_artifact)
    run_extract(spark, s)
    before = {
        t: (open_table(tmp_path / "out" / t, "delta").version(), delta_frame(tmp_path / "out" / t))
        for t in ("entities", "record_status")
    }
    write_notes(tmp_path / "notes", [("a", "Aspirin only."), ("b", "CT scan.")])

    def boom() -> None:
        raise RuntimeError("injected failure between file writes and commit")

    with pytest.raises(RuntimeError, match="injected"):
        run_extract(spark, s, before_commit=boom)
    for t, (version, frame) in before.items():
        assert open_table(tmp_path / "out" / t, "delta").version() == version
        pd.testing.assert_frame_equal(delta_frame(tmp_path / "out" / t), frame)
    # The data files were written (the failure came after them) but no reader sees them.
    files_on_disk = list((tmp_path / "out" / "entities").glob("*.parquet"))
    assert len(files_on_disk) > len(DeltaTable(str(tmp_path / "out" / "entities")).file_uris())


def test_parquet_output_and_delta_input(spark: Any, tmp_path: Path, gazetteer_artifact: Path) -> None:
    # The input is a Delta table whose first version is overwritten: only the live rows count.
    from deltalake import write_deltalake

    notes_path = tmp_path / "notes"
    old = pa.table({"id": pa.array([1, 2], pa.int64()), "body": ["fever", "fever"]})
    write_deltalake(str(notes_path), old)
    write_deltalake(
        str(notes_path),
        pa.table({"id": pa.array([7], pa.int64()), "body": ["CT and fever"]}),
        mode="overwrite",
    )
    s = ExtractSettings(
        input=str(notes_path),
        output=str(tmp_path / "out"),
        model=str(gazetteer_artifact),
        output_format="parquet",
        id_column="id",
        text_column="body",
    )
    summary = run_extract(spark, s)
    assert summary.n_input == 1
    ents = open_table(tmp_path / "out" / "entities", "parquet").read().to_pandas()
    assert sorted(zip(ents.record_id, ents.text, strict=True)) == [("7", "CT"), ("7", "fever")]
    rows = run_sql(spark, tmp_path / "out", "SELECT record_id, status FROM record_status").collect()
    assert [(r["record_id"], r["status"]) for r in rows] == [("7", "ok")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id_column": "nope"}, "no id column 'nope'"),
        ({"text_column": "n_words"}, "text column 'n_words' has type int"),
        ({"input": "/nonexistent/notes"}, "does not exist"),
        ({"input": "EMPTY"}, "holds no table"),
        ({"batch_size": 0}, "batch_size must be >= 1, got 0"),
    ],
)
def test_bad_input_fails_before_any_work_naming_the_problem(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path, change: dict[str, Any], message: str
) -> None:
    folder = tmp_path / "notes"
    folder.mkdir()
    pq.write_table(
        pa.table({"record_id": ["x"], "text": ["fever"], "n_words": pa.array([1], pa.int32())}),
        folder / "p.parquet",
    )
    (tmp_path / "EMPTY").mkdir()
    if change.get("input") == "EMPTY":
        change = {"input": str(tmp_path / "EMPTY")}
    s = ExtractSettings(**{**settings(tmp_path, gazetteer_artifact).__dict__, **change})
    with pytest.raises(ExtractError, match=message):
        run_extract(spark, s)
    assert not (tmp_path / "out").exists()

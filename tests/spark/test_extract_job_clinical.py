"""The extraction job with clinical heads (issue 11) end to end in local[2]: assertion columns, the
relations table, its commits (idempotent re-run, copy-on-write replacement of a changed note,
nothing visible after a failure before the commit), the no-heads artifact, the quality gate, and
the README's clinical SQL over tables the job wrote."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from medner_udf.extraction.job import run_extract
from medner_udf.extraction.quality import check_run_quality
from medner_udf.extraction.settings import ExtractSettings
from medner_udf.extraction.sql import run_sql
from medner_udf.extraction.tables import open_table

pytestmark = pytest.mark.spark

TABLES = ("entities", "relations", "record_status")
NOTE_A = "No fever. Possible chest pain."
NOTE_B = "CT showed a mass in the liver.\nfever of 38.5 today."


def write_notes(folder: Path, notes: Sequence[tuple[str, str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    table = pa.table({"record_id": [n[0] for n in notes], "text": [n[1] for n in notes]})
    pq.write_table(table, folder / "part-0.parquet")


def settings(tmp: Path, model: Path, **kw: Any) -> ExtractSettings:
    return ExtractSettings(
        input=str(tmp / "notes"), output=str(tmp / "out"), model=str(model), batch_size=2, **kw
    )


def frame(out: Path, table: str) -> pd.DataFrame:
    df = DeltaTable(str(out / table)).to_pandas()
    return df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def relation_keys(out: Path) -> set[tuple[str, str, str, str]]:
    rel = frame(out, "relations")
    return set(zip(rel.record_id, rel.head_text, rel.type, rel.tail_text, strict=True))


@pytest.mark.slow  # two Spark jobs
def test_job_writes_assertions_and_relations_and_a_rerun_leaves_them_identical(
    spark: Any, tmp_path: Path, clinical_artifact: Path
) -> None:
    write_notes(tmp_path / "notes", [("a", NOTE_A), ("b", NOTE_B), ("c", "Nothing to see.")])
    s = settings(tmp_path, clinical_artifact)
    first = run_extract(spark, s)
    out = tmp_path / "out"
    assert first.heads == {"assertion": "tiny-assertion/a1", "relations": "tiny-relations/r1"}
    assert first.notes == [] and first.n_relations_added == 2

    ents = frame(out, "entities")
    got = {(r.record_id, r.text): r.assertion for r in ents.itertuples()}
    assert got[("a", "fever")] == "absent" and got[("a", "chest pain")] == "possible"
    assert {got[("b", t)] for t in ("CT", "mass", "liver", "fever", "38.5")} == {"present"}
    assert ents.assertion_score.between(0, 1).all()
    assert relation_keys(out) == {("b", "38.5", "MODIFY", "fever"), ("b", "liver", "MODIFY", "mass")}
    rel = frame(out, "relations")
    for r in rel.itertuples():
        assert NOTE_B[r.head_begin : r.head_end] == r.head_text
        assert NOTE_B[r.tail_begin : r.tail_end] == r.tail_text
    assert set(rel.run_id) == {first.run_id} and set(rel.model_version) == {"1"}
    st = frame(out, "record_status")
    assert dict(zip(st.record_id, st.n_relations, strict=True)) == {"a": 0, "b": 2, "c": 0}
    assert check_run_quality(str(out), first.run_id, str(clinical_artifact), n_input=3) == []

    before = {t: frame(out, t) for t in TABLES}
    again = run_extract(spark, s)
    assert again.run_id == first.run_id and again.rerun
    for t in TABLES:
        pd.testing.assert_frame_equal(frame(out, t), before[t])


@pytest.mark.slow  # two Spark jobs and a failed one
def test_a_changed_note_replaces_its_relations_and_a_failure_before_commit_changes_nothing(
    spark: Any, tmp_path: Path, clinical_artifact: Path
) -> None:
    out = tmp_path / "out"
    b_again = "CT showed a mass in the liver.\nfever of 38.5 today.\nCT showed a mass in the liver."
    write_notes(tmp_path / "notes", [("a", "fever of 38.5 today."), ("b", NOTE_B)])
    s = settings(tmp_path, clinical_artifact)
    first = run_extract(spark, s)
    versions = {t: open_table(out / t, "delta").version() for t in TABLES}
    frames = {t: frame(out, t) for t in TABLES}

    write_notes(tmp_path / "notes", [("a", "fever of 38.5 today."), ("b", b_again)])

    def boom() -> None:
        raise RuntimeError("injected failure between file writes and commit")

    with pytest.raises(RuntimeError, match="injected"):
        run_extract(spark, s, before_commit=boom)
    for t in TABLES:
        assert open_table(out / t, "delta").version() == versions[t]
        pd.testing.assert_frame_equal(frame(out, t), frames[t])

    second = run_extract(spark, s)
    assert second.status_counts["skipped"] == 1 and second.status_counts["ok"] == 1
    rel = frame(out, "relations")
    b_rows = rel[rel.record_id == "b"]
    assert set(b_rows.run_id) == {second.run_id}
    liver_2 = b_again.rindex("liver")
    assert sorted(zip(b_rows.head_begin, b_rows.head_text, b_rows.tail_text, strict=True)) == [
        (b_again.index("liver"), "liver", "mass"),
        (b_again.index("38.5"), "38.5", "fever"),
        (liver_2, "liver", "mass"),
    ]
    assert liver_2 > len(NOTE_B)  # the new line's relation: b was tagged again, not kept
    # a was skipped: its relation row is the first run's, untouched.
    a_rows = rel[rel.record_id == "a"]
    assert list(zip(a_rows.head_text, a_rows.tail_text, a_rows.run_id, strict=True)) == [
        ("38.5", "fever", first.run_id)
    ]
    assert check_run_quality(str(out), second.run_id, str(clinical_artifact), n_input=2) == []


def test_an_artifact_without_heads_runs_with_null_assertions_and_no_relations(
    spark: Any, tmp_path: Path, gazetteer_artifact: Path
) -> None:
    write_notes(tmp_path / "notes", [("a", NOTE_A), ("b", NOTE_B)])
    summary = run_extract(spark, settings(tmp_path, gazetteer_artifact))
    out = tmp_path / "out"
    assert summary.heads == {"assertion": None, "relations": None}
    assert len(summary.notes) == 1 and "no assertion or relation model is attached" in summary.notes[0]
    assert summary.n_relations_added == 0 and summary.relations_version is None
    ents = frame(out, "entities")
    assert len(ents) == 7 and ents.assertion.isna().all() and ents.assertion_score.isna().all()
    rows = run_sql(spark, out, "SELECT count(*) AS n FROM relations").collect()
    assert rows[0]["n"] == 0
    assert set(frame(out, "record_status").n_relations) == {0}
    assert check_run_quality(str(out), summary.run_id, str(gazetteer_artifact), n_input=2) == []


def readme_clinical_queries() -> list[str]:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Clinical questions", 1)[1]
    block = section.split("```sql\n", 1)[1].split("```", 1)[0]
    return [q for q in block.split(";") if q.strip()]


@pytest.mark.slow
def test_readme_clinical_queries_answer_on_tables_the_job_wrote(
    spark: Any, tmp_path: Path, clinical_sql_artifact: Path
) -> None:
    notes = [
        (
            "n1",
            "The man had fever. No chest pain.\nHemoglobin was 9.1 g/dL.\n"
            "Aspirin 81 mg was given orally.\nLaparoscopy with biopsy.\n",
        ),
        ("n2", NOTE_B),
        ("n3", "No fever. Possible chest pain.\nAspirin was given."),
    ]
    write_notes(tmp_path / "notes", notes)
    run_extract(spark, settings(tmp_path, clinical_sql_artifact))
    queries = readme_clinical_queries()
    assert len(queries) == 4
    symptoms, labs, medications, procedures = (run_sql(spark, tmp_path / "out", q).collect() for q in queries)
    # n3's fever is negated and its chest pain hedged: n3 has no present symptom.
    assert [(r["record_id"], r["n_present"], r["symptoms"]) for r in symptoms] == [
        ("n1", 1, ["fever"]),
        ("n2", 2, ["fever", "mass"]),
    ]
    assert [(r["record_id"], r["lab_value"], r["test"]) for r in labs] == [
        ("n1", "9.1 g/dL", "Hemoglobin"),
        ("n2", "38.5", None),  # it modifies a symptom (fever), not a test
    ]
    assert [(r["record_id"], r["medication"], r["dosages"], r["routes"]) for r in medications] == [
        ("n1", "Aspirin", ["81 mg"], ["orally"]),
        ("n3", "Aspirin", [], []),
    ]
    assert [(r["record_id"], r["procedure"], r["sub_procedures"]) for r in procedures] == [
        ("n1", "Laparoscopy", ["biopsy"])
    ]

"""The data-quality gate over one run's rows (no Spark: tables built by hand)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medner_udf.extraction.quality import check_run_quality
from medner_udf.extraction.schemas import ENTITIES_SCHEMA, RELATIONS_SCHEMA, STATUS_SCHEMA
from medner_udf.extraction.tables import Changes, DataFile, open_table
from medner_udf.taggers.gazetteer import GazetteerTagger


def commit(folder: Path, schema: pa.Schema, rows: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "f.parquet")
    f = DataFile("f.parquet", os.path.getsize(folder / "f.parquet"), len(rows), int(time.time() * 1000))
    open_table(folder, "delta").commit(Changes(adds=[f]), schema, {})


def status(rid: str, st: str, n_chars: int, run: str = "r1") -> dict[str, Any]:
    return {
        "record_id": rid,
        "note_hash": "h",
        "status": st,
        "n_entities": 1,
        "error": None,
        "n_chars": n_chars,
        "model_name": "g",
        "model_version": "1",
        "run_id": run,
        "run_seq": 0,
    }


def entity(rid: str, b: int, e: int, label: str, score: float = 1.0, run: str = "r1") -> dict[str, Any]:
    return {
        "record_id": rid,
        "begin": b,
        "end": e,
        "text": "x" * (e - b),
        "label": label,
        "score": score,
        "note_hash": "h",
        "model_name": "g",
        "model_version": "1",
        "run_id": run,
    }


def test_clean_run_passes_and_each_broken_contract_is_reported(tmp_path: Path) -> None:
    model = GazetteerTagger.from_terms([("fever", "Sign_symptom")], name="g", version="1").save(
        tmp_path / "m"
    )
    commit(
        tmp_path / "good" / "record_status", STATUS_SCHEMA, [status("a", "ok", 10), status("b", "empty", 0)]
    )
    commit(
        tmp_path / "good" / "entities",
        ENTITIES_SCHEMA,
        [entity("a", 0, 5, "Sign_symptom"), entity("z", 0, 99, "Nope", 7.0, run="r0")],
    )
    assert check_run_quality(str(tmp_path / "good"), "r1", str(model), n_input=2) == []

    commit(
        tmp_path / "bad" / "record_status", STATUS_SCHEMA, [status("a", "ok", 10), status("b", "error", 5)]
    )
    commit(
        tmp_path / "bad" / "entities",
        ENTITIES_SCHEMA,
        [
            entity("a", 8, 12, "Sign_symptom"),
            entity("a", 0, 2, "Drug"),
            entity("a", 0, 1, "Sign_symptom", 1.5),
            entity("b", 0, 1, "Sign_symptom"),
        ],
    )
    problems = check_run_quality(str(tmp_path / "bad"), "r1", str(model), n_input=3)
    assert problems == [
        "run r1: 3 input rows but 2 status rows",
        "run r1: 1 entities with offsets outside their note",
        "run r1: 1 entities of records without an 'ok' status row",
        "run r1: labels outside the model's set: {'Drug': 1}",
        "run r1: 1 scores outside [0, 1]",
    ]
    assert check_run_quality(str(tmp_path / "good"), "r9", str(model)) == ["run r9 has no status rows"]


def relation(
    rid: str, head: tuple[int, int, str], tail: tuple[int, int, str], score: float = 0.9, kind: str = "MODIFY"
) -> dict[str, Any]:
    return {
        "record_id": rid,
        "model_name": "g",
        "model_version": "1",
        "run_id": "r1",
        "head_begin": head[0],
        "head_end": head[1],
        "head_label": head[2],
        "head_text": "x" * (head[1] - head[0]),
        "tail_begin": tail[0],
        "tail_end": tail[1],
        "tail_label": tail[2],
        "tail_text": "x" * (tail[1] - tail[0]),
        "type": kind,
        "score": score,
    }


def test_assertion_columns_and_relation_ends_are_checked(tmp_path: Path) -> None:
    model = GazetteerTagger.from_terms(
        [("fever", "Sign_symptom"), ("38.5", "Lab_value")], name="g", version="1"
    ).save(tmp_path / "m")
    fever, value = (0, 5, "Sign_symptom"), (9, 13, "Lab_value")

    def ent(span: tuple[int, int, str], assertion: str | None, score: float | None) -> dict[str, Any]:
        return {**entity("a", *span), "assertion": assertion, "assertion_score": score}

    good = tmp_path / "good"
    commit(good / "record_status", STATUS_SCHEMA, [{**status("a", "ok", 20), "n_relations": 1}])
    commit(good / "entities", ENTITIES_SCHEMA, [ent(fever, "absent", 0.9), ent(value, "present", 0.8)])
    commit(good / "relations", RELATIONS_SCHEMA, [relation("a", value, fever)])
    assert check_run_quality(str(good), "r1", str(model), n_input=1) == []

    bad = tmp_path / "bad"
    commit(bad / "record_status", STATUS_SCHEMA, [{**status("a", "ok", 20), "n_relations": 1}])
    commit(bad / "entities", ENTITIES_SCHEMA, [ent(fever, "negated", 0.9), ent(value, "present", None)])
    commit(
        bad / "relations",
        RELATIONS_SCHEMA,
        [
            relation("a", value, fever),
            relation("a", value, (0, 5, "Lab_value"), 1.5, kind="TREATS"),
            relation("b", value, fever),
        ],
    )
    assert check_run_quality(str(bad), "r1", str(model), n_input=1) == [
        "run r1: 2 relations whose head or tail is not an entity of the same record and run",
        "run r1: 1 relation scores outside [0, 1]",
        "run r1: relation types outside ['MODIFY', 'SUB_PROCEDURE', 'IDENTICAL', 'BEFORE', 'AFTER', 'CAUSE']: "
        "{'TREATS': 1}",
        "run r1: 2 records whose n_relations differs from their relation rows: ['a', 'b']",
        "run r1: assertions outside ['present', 'absent', 'possible']: {'negated': 1}",
        "run r1: 1 assertion scores outside [0, 1] or not matching their assertion",
    ]


def test_the_gate_knows_the_relation_types_the_model_writes() -> None:
    from medner_udf.clinical.relations import RELATION_TYPES as MODEL_TYPES
    from medner_udf.extraction.schemas import RELATION_TYPES

    assert RELATION_TYPES == MODEL_TYPES

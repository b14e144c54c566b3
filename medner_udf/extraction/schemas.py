"""The warehouse tables' vocabulary: record statuses, planner actions, table names and schemas.

Everything the driver, the executors, the SQL views and the Airflow quality gate must agree on lives
here, in one module that imports pyarrow and nothing heavier (no torch, no Spark, no pandas), so the
light readers (``sql``, ``quality``) stay light. The long form is docs/extraction.md ("Tables");
keep the two in step.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

# Record statuses (docs/extraction.md): every input record of a run ends as exactly one of these.
OK, EMPTY, SKIPPED, ERROR = "ok", "empty", "skipped", "error"
STATUSES = (OK, EMPTY, SKIPPED, ERROR)

# What the driver decided for a record before it reached the executors (planning.plan_actions).
ACTION_TAG, ACTION_SKIP, ACTION_DUPLICATE, ACTION_NULL_ID = "tag", "skip", "duplicate", "null_id"
ACTIONS = (ACTION_TAG, ACTION_SKIP, ACTION_DUPLICATE, ACTION_NULL_ID)

ENTITIES_TABLE, STATUS_TABLE, RELATIONS_TABLE = "entities", "record_status", "relations"

# Assertion statuses of an entity (docs/clinical.md); null when no assertion model is attached.
ASSERTION_VALUES = ("present", "absent", "possible")
# Relation types a relation model may write (medner_udf.clinical.relations.RELATION_TYPES, repeated
# here so that the quality gate needs no model code; a test keeps the two equal).
RELATION_TYPES = ("MODIFY", "SUB_PROCEDURE", "IDENTICAL", "BEFORE", "AFTER", "CAUSE")

# Columns of the frames the driver sends to the executors.
INPUT_COLUMNS = ("record_id", "text", "note_hash", "action", "n_rows")
INPUT_SCHEMA_DDL = "record_id string, text string, note_hash string, action string, n_rows long"

ENTITY_STRUCT = pa.struct(
    [
        ("begin", pa.int32()),
        ("end", pa.int32()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float64()),
    ]
)
ENTITY_STRUCT_DDL = "struct<begin:int,end:int,text:string,label:string,score:double>"

# The tag-only output (no files written): one row per input row, entities nested.
TAGGED_SCHEMA_DDL = (
    "record_id string, note_hash string, status string, n_entities int, error string, "
    f"n_chars long, entities array<{ENTITY_STRUCT_DDL}>"
)

# The tables' file schemas.
ENTITIES_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("begin", pa.int32()),
        ("end", pa.int32()),
        ("text", pa.string()),
        ("label", pa.string()),
        ("score", pa.float64()),
        ("note_hash", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        # Added by issue 11 at the end, so files written before it read with these columns null.
        ("assertion", pa.string()),
        ("assertion_score", pa.float64()),
    ]
)
STATUS_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("note_hash", pa.string()),
        ("status", pa.string()),
        ("n_entities", pa.int32()),
        ("error", pa.string()),
        ("n_chars", pa.int64()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("run_seq", pa.int64()),
        ("n_relations", pa.int32()),  # relations written for it in this run (issue 11)
    ]
)
# One row per predicted relation between two entities of the same record and run; head = brat's
# Arg1 (the modifier of MODIFY, the sub-procedure of SUB_PROCEDURE). Key: (record_id,
# model_version, head_begin, head_end, head_label, tail_begin, tail_end, tail_label, type).
RELATIONS_SCHEMA = pa.schema(
    [
        ("record_id", pa.string()),
        ("model_name", pa.string()),
        ("model_version", pa.string()),
        ("run_id", pa.string()),
        ("head_begin", pa.int32()),
        ("head_end", pa.int32()),
        ("head_label", pa.string()),
        ("head_text", pa.string()),
        ("tail_begin", pa.int32()),
        ("tail_end", pa.int32()),
        ("tail_label", pa.string()),
        ("tail_text", pa.string()),
        ("type", pa.string()),
        ("score", pa.float64()),
    ]
)
TABLE_SCHEMAS = {
    ENTITIES_TABLE: ENTITIES_SCHEMA,
    STATUS_TABLE: STATUS_SCHEMA,
    RELATIONS_TABLE: RELATIONS_SCHEMA,
}

# What each writing task returns to the driver: one row per file it wrote.
WRITTEN_FILES_COLUMNS = ("table", "path", "size", "num_records", "modification_time")
WRITTEN_FILES_DDL = "table string, path string, size long, num_records long, modification_time long"

_SPARK_TYPES = {pa.string(): "string", pa.int32(): "int", pa.int64(): "bigint", pa.float64(): "double"}


def spark_ddl(schema: pa.Schema) -> str:
    """A Spark DDL string for a flat Arrow schema of the types the tables use."""
    try:
        return ", ".join(f"`{f.name}` {_SPARK_TYPES[f.type]}" for f in schema)
    except KeyError as exc:
        raise TypeError(f"no Spark type for Arrow type {exc.args[0]}") from exc


def note_hash(text: str | None) -> str | None:
    """SHA-256 of the note's UTF-8 bytes, hex: the ``note_hash`` column, the value Spark's
    ``sha2(text, 256)`` gives.

    ``surrogatepass`` lets a Python string with an unpaired surrogate (possible from pandas, never
    from Parquet) still get a hash, so it can be reported instead of crashing.
    """
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

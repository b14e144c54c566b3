"""The extraction job: notes table -> entities, relations and record_status tables, incremental and
idempotent.

``run_extract`` is the orchestration only; ``medner extract`` and the spark-submit entry point
(``medner_udf/cli/jobs/extract.py``, wrapped by ``jobs/extract.py``) both call it. The session is
passed in: this module never creates one. The parts it strings together:

- ``settings``: what to run, checked before any work;
- ``planning``: the pure DataFrame transforms and the run's id (semantics in its docstring);
- ``shipping``: the artifact zipped and added to the session;
- ``executor``: tagging and file writing inside the executors (``mapInPandas``);
- ``tables``: the commits.

**Commits**: one per table, entities first, then relations, then record_status, each atomic. Until
the first commit, every table is unchanged; if the job died between two commits, re-running it heals
the tables (the changed records are still unmarked in record_status, so they are tagged again and
their entity and relation rows replaced). A re-run of the same run replaces its old status, entity
and relation rows in the same commits, so the tables end as one run would leave them.
docs/extraction.md has the long form.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medner_udf.errors import MednerError
from medner_udf.extraction.executor import TaskConfig, write_batches
from medner_udf.extraction.planning import (
    choose_run,
    derived_run_id,
    input_fingerprint,
    latest_tagged,
    mark_duplicates,
    plan_actions,
    prepare_notes,
    read_notes,
    validate_notes_schema,
)
from medner_udf.extraction.schemas import (
    ENTITIES_SCHEMA,
    ENTITIES_TABLE,
    RELATIONS_SCHEMA,
    RELATIONS_TABLE,
    SKIPPED,
    STATUS_SCHEMA,
    STATUS_TABLE,
    STATUSES,
    WRITTEN_FILES_DDL,
)
from medner_udf.extraction.settings import ExtractSettings, check_settings, resolve_input_format
from medner_udf.extraction.shipping import ship_artifact
from medner_udf.extraction.tables import Changes, DataFile, Table, open_table, plan_row_removal
from medner_udf.taggers.artifact import read_info

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)


class LostRecordsError(MednerError):
    """The executors wrote fewer (or more) status rows than there were input rows; nothing is
    committed. A bug or an executor that lost output, never a user error."""


@dataclass
class RunSummary:
    """What a run did; printed by the CLI and logged by the job (counts only, no note text)."""

    run_id: str
    run_seq: int
    rerun: bool
    model_name: str
    model_version: str
    n_input: int
    status_counts: dict[str, int] = field(default_factory=dict)
    n_entities_added: int = 0
    n_relations_added: int = 0
    # The clinical heads attached to the artifact ("name/version"), None where none is.
    heads: dict[str, str | None] = field(default_factory=dict)
    entities_version: int | None = None
    relations_version: int | None = None
    status_version: int | None = None
    seconds: float = 0.0
    # Things an operator should know about the run, each said once (no note text).
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _read_table(spark: SparkSession, table: Table) -> DataFrame | None:
    uris = table.file_uris()
    return spark.read.parquet(*uris) if uris else None


def _partitions(spark: SparkSession, s: ExtractSettings, n_input: int) -> int:
    if s.partitions is not None:
        return s.partitions
    return max(int(spark.sparkContext.defaultParallelism), math.ceil(n_input / s.rows_per_partition))


def _read_new(table: Table, files: list[DataFile], columns: list[str]) -> pa.Table:
    parts = [pq.read_table(str(Path(table.path) / f.path), columns=columns) for f in files]
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts)


def _attached_heads(model: str) -> dict[str, str | None]:
    """Load the heads attached to the artifact on the driver, so that a head whose labels do not
    cover the tagger's fails here (``LabelMismatchError`` naming both sets) before any Spark work;
    the executors load their own copies once per worker."""
    from medner_udf.clinical.base import ASSERTION_DIR, RELATIONS_DIR, load_heads

    heads = load_heads(model)
    return {
        task: None if head is None else f"{head.name}/{head.version}"
        for task, head in ((ASSERTION_DIR, heads.assertion), (RELATIONS_DIR, heads.relations))
    }


def _heads_notes(heads: dict[str, str | None]) -> list[str]:
    if all(v is None for v in heads.values()):
        return [
            "no assertion or relation model is attached to the artifact: assertion columns are null "
            "and no relations were written (attach them with `medner attach`)"
        ]
    return [
        f"no {task} model is attached to the artifact: "
        + ("assertion columns are null" if task == "assertion" else "no relations were written")
        for task, v in heads.items()
        if v is None
    ]


def run_extract(
    spark: SparkSession,
    settings: ExtractSettings,
    before_commit: Callable[[], None] | None = None,
) -> RunSummary:
    """Run one extraction: check, plan, tag and write on the executors, then commit both tables.

    ``before_commit`` runs after every data file is written and before the first commit (tests use
    it to inject a failure; nothing is visible to readers until it returns).
    """
    from pyspark.sql import functions as F

    started = time.perf_counter()
    check_settings(settings)
    info = read_info(settings.model)
    heads = _attached_heads(settings.model)
    fmt = resolve_input_format(settings.input, settings.input_format)
    raw = read_notes(spark, settings.input, fmt)
    validate_notes_schema(raw, settings.id_column, settings.text_column)
    n_input = raw.count()

    entities = open_table(settings.entities_path, settings.output_format)
    relations = open_table(settings.relations_path, settings.output_format)
    status = open_table(settings.status_path, settings.output_format)
    previous = _read_table(spark, status)
    if previous is not None:
        previous = previous.where(F.col("model_version") == info.version)
        runs = {
            r["run_id"]: int(r["seq"])
            for r in previous.groupBy("run_id").agg(F.max("run_seq").alias("seq")).collect()
        }
    else:
        runs = {}

    notes = mark_duplicates(prepare_notes(raw, settings.id_column, settings.text_column))
    base = derived_run_id(input_fingerprint(notes), info.name, info.version, settings.full)
    run_id, run_seq, rerun = choose_run(settings.run_id, base, runs)
    latest = latest_tagged(previous, info.version, run_id) if previous is not None else None
    planned = plan_actions(notes, latest, settings.full)

    cfg = TaskConfig(
        artifact=str(Path(settings.model).resolve()),
        model_name=info.name,
        model_version=info.version,
        run_id=run_id,
        run_seq=run_seq,
        batch_size=settings.batch_size,
        max_batch_chars=settings.max_batch_chars,
        tagger_batch_size=settings.tagger_batch_size,
        shipped_name=ship_artifact(spark, settings.model) if settings.ship_artifact else None,
        entities_uri=f"file://{entities.path}",
        status_uri=f"file://{status.path}",
        relations_uri=f"file://{relations.path}",
    )
    n_parts = _partitions(spark, settings, n_input)
    log.info(
        "run %s (seq %d, rerun=%s): %d input rows in %d partitions", run_id, run_seq, rerun, n_input, n_parts
    )
    written = (
        planned.repartition(n_parts)
        .mapInPandas(functools.partial(write_batches, cfg=cfg), WRITTEN_FILES_DDL)
        .collect()
    )
    new_files: dict[str, list[DataFile]] = {ENTITIES_TABLE: [], RELATIONS_TABLE: [], STATUS_TABLE: []}
    for row in written:
        new_files[row["table"]].append(
            DataFile(row["path"], int(row["size"]), int(row["num_records"]), int(row["modification_time"]))
        )

    # Nothing lost silently: every input row must have its status row before anything is committed.
    new_status = _read_new(status, new_files[STATUS_TABLE], ["record_id", "status"])
    if new_status.num_rows != n_input:
        raise LostRecordsError(f"{n_input} input rows but {new_status.num_rows} status rows were written")

    # Entity and relation rows of this model version to drop: those of every record this run
    # processed (tagged, empty, failed or duplicated) and, on a re-run, every row the earlier
    # attempt wrote.
    processed = pc.filter(
        new_status["record_id"],
        pc.and_(pc.not_equal(new_status["status"], SKIPPED), pc.is_valid(new_status["record_id"])),
    )
    processed_set = pa.array(sorted(set(processed.to_pylist())), pa.string())

    def _drop_record_rows(rows: pa.Table) -> pa.Array:
        same_version = pc.equal(rows["model_version"], info.version)
        hit = pc.or_(pc.is_in(rows["record_id"], value_set=processed_set), pc.equal(rows["run_id"], run_id))
        return pc.fill_null(pc.and_(same_version, hit), False)

    def _drop_status(rows: pa.Table) -> pa.Array:
        return pc.fill_null(pc.equal(rows["run_id"], run_id), False)

    ent_changes = Changes(adds=list(new_files[ENTITIES_TABLE]))
    ent_changes.extend(
        plan_row_removal(
            entities,
            ["record_id", "model_version", "run_id"],
            _drop_record_rows,
            ENTITIES_SCHEMA,
            f"part-{run_id}-cow",
        )
    )
    rel_changes = Changes(adds=list(new_files[RELATIONS_TABLE]))
    rel_changes.extend(
        plan_row_removal(
            relations,
            ["record_id", "model_version", "run_id"],
            _drop_record_rows,
            RELATIONS_SCHEMA,
            f"part-{run_id}-cow",
        )
    )
    st_changes = Changes(adds=list(new_files[STATUS_TABLE]))
    st_changes.extend(plan_row_removal(status, ["run_id"], _drop_status, STATUS_SCHEMA, f"part-{run_id}-cow"))

    if before_commit is not None:
        before_commit()
    meta = {"medner.run_id": run_id, "medner.model_version": info.version, "medner.run_seq": str(run_seq)}
    for table, schema in ((entities, ENTITIES_SCHEMA), (status, STATUS_SCHEMA)):
        table.add_columns(schema)  # tables written before issue 11 gain its columns (null)
    entities.commit(ent_changes, ENTITIES_SCHEMA, meta)
    relations.commit(rel_changes, RELATIONS_SCHEMA, meta)
    status.commit(st_changes, STATUS_SCHEMA, meta)

    counts = Counter(new_status["status"].to_pylist())
    summary = RunSummary(
        run_id=run_id,
        run_seq=run_seq,
        rerun=rerun,
        model_name=info.name,
        model_version=info.version,
        n_input=n_input,
        status_counts={s: counts.get(s, 0) for s in STATUSES},
        n_entities_added=sum(f.num_records for f in new_files[ENTITIES_TABLE]),
        n_relations_added=sum(f.num_records for f in new_files[RELATIONS_TABLE]),
        heads=heads,
        entities_version=entities.version(),
        relations_version=relations.version(),
        status_version=status.version(),
        seconds=round(time.perf_counter() - started, 3),
        notes=_heads_notes(heads),
    )
    for note in summary.notes:
        log.warning("run %s: %s", run_id, note)
    log.info("run %s done: %s", run_id, summary.as_dict())
    return summary

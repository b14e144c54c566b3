"""The extraction job: notes table -> entities, relations and record_status tables, incremental and
idempotent.

``run_extract`` is the orchestration only; ``medner extract`` and the spark-submit entry point
(``medner_udf/cli/jobs/extract.py``, wrapped by ``jobs/extract.py``) both call it. The session is
passed in: this module never creates one. The parts it strings together:

- ``settings``: what to run, checked before any work;
- ``storage``: input, output and model as paths or URIs, with the storage options;
- ``planning``: reading the input, the pure DataFrame transforms and the run's id (semantics in
  its docstring);
- ``shipping``: the artifact zipped and added to the session;
- ``executor``: tagging and file writing inside the executors (``mapInPandas``);
- ``tables``: the commits.

**One scan of the input**: the prepared notes are persisted; count and fingerprint come from one
aggregation over them, and duplicate marking, planning and the tagging pass read the persisted copy.

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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from medner_udf.errors import MednerError
from medner_udf.extraction import task_stats
from medner_udf.extraction.executor import WARM_UP_DDL, TaskConfig, warm_worker, write_batches
from medner_udf.extraction.planning import (
    choose_partitions,
    choose_run,
    derived_run_id,
    input_stats,
    latest_tagged,
    mark_duplicates,
    plan_actions,
    prepare_notes,
    read_notes,
    read_parquet_files,
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
from medner_udf.extraction.storage import local_copy, location, storage_failure
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
    # Times the tasks opened an input file this run (URI inputs; None when Spark's own reader read
    # a local input): equal to the number of input files when the input was scanned once.
    input_files_read: int | None = None
    # The tagging pass's tasks: count, rows, seconds and peak Python-worker memory (min/median/max;
    # ``task_stats.summarise``), and each task's record in ``task_list`` (ordered by partition).
    tasks: dict[str, Any] = field(default_factory=dict)
    task_list: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self, task_details: bool = False) -> dict[str, Any]:
        """The summary as plain data; each task's record only with ``task_details``."""
        d = asdict(self)
        if not task_details:
            del d["task_list"]
        return d


def _read_table(spark: SparkSession, table: Table, schema: pa.Schema) -> DataFrame | None:
    uris = table.file_uris()
    if not uris:
        return None
    if table.location.is_local:
        return spark.read.parquet(*uris)
    return read_parquet_files(spark, uris, schema, table.storage_options)


def _task_slots(spark: SparkSession) -> int:
    """Tasks the job can run at once: the cores Spark has (``defaultParallelism``: the executors'
    total cores, or N of ``local[N]``) over the cores each task takes (``spark.task.cpus``)."""
    cores = int(spark.sparkContext.defaultParallelism)
    task_cpus = int(spark.conf.get("spark.task.cpus", "1") or 1)
    return max(1, cores // max(1, task_cpus))


def _partitions(spark: SparkSession, s: ExtractSettings, n_input: int, n_chars: int) -> int:
    if s.partitions is not None:
        return s.partitions
    return choose_partitions(
        n_input, _task_slots(spark), s.rows_per_partition, n_chars, s.chars_per_partition
    )


def _distribute(planned: DataFrame, n_parts: int) -> DataFrame:
    """Tasks get contiguous record_id ranges, sorted: each written file then covers a narrow
    record_id range, and its min/max statistics let readers skip it for other records."""
    return planned.repartitionByRange(n_parts, "record_id").sortWithinPartitions("record_id")


def _read_new(table: Table, files: list[DataFile], columns: list[str]) -> pa.Table:
    parts = [table.read_file(f.path, columns) for f in files]
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


def _load_model(spark: SparkSession, settings: ExtractSettings) -> tuple[Path, str, str | None]:
    """(local artifact folder on the driver, the artifact as the executors should find it, the
    shipped name). A model URI is downloaded once into the driver's artifact cache; shipped, the
    executors get that copy, unshipped they download it into their own cache."""
    model_loc = location(settings.model, "model")
    local = local_copy(model_loc, settings.storage_options, "artifact.json", "model")
    shipped = ship_artifact(spark, local) if settings.ship_artifact else None
    for_tasks = str(local.resolve()) if model_loc.is_local or shipped is not None else model_loc.uri
    return local, for_tasks, shipped


class WarmUp:
    """The warm-up pass (``executor.warm_worker``), run in a background thread while the driver
    plans: one task per task slot loads the model into a Python worker, which Spark then reuses
    for the tagging pass (``spark.python.worker.reuse``). Planning is mostly driver and JVM work
    that leaves the slots idle, so the workers' start-up (importing torch, loading the model:
    several seconds each) comes off the run's critical path. Best effort: a failed or cancelled
    warm-up changes nothing, since the tagging pass loads whatever is not loaded yet and reports
    any real failure itself."""

    def __init__(self, spark: SparkSession, cfg: TaskConfig, slots: int) -> None:
        self.group = f"medner-warm-up-{uuid.uuid4().hex[:12]}"
        self._sc = spark.sparkContext
        self._thread = threading.Thread(
            target=self._run, args=(spark, cfg, slots), name=self.group, daemon=True
        )
        self._thread.start()

    def _run(self, spark: SparkSession, cfg: TaskConfig, slots: int) -> None:
        try:
            self._sc.setJobGroup(self.group, "medner: load the model on the workers while the driver plans")
            spark.range(slots, numPartitions=slots).mapInPandas(
                functools.partial(warm_worker, cfg=cfg), WARM_UP_DDL
            ).collect()
        except Exception as exc:  # best effort, see the class docstring
            log.debug(
                "warm-up pass did not complete (%s); the tagging pass loads the model", type(exc).__name__
            )

    def __enter__(self) -> WarmUp:
        return self

    def __exit__(self, *exc: object) -> None:
        """Cancel the pass if it still runs (the run failed early) and wait for its thread."""
        if self._thread.is_alive():
            self._sc.cancelJobGroup(self.group)
        self._thread.join()


def run_extract(
    spark: SparkSession,
    settings: ExtractSettings,
    before_commit: Callable[[], None] | None = None,
) -> RunSummary:
    """Run one extraction: check, plan, tag and write on the executors, then commit both tables.

    ``before_commit`` runs after every data file is written and before the first commit (tests use
    it to inject a failure; nothing is visible to readers until it returns).
    """

    started = time.perf_counter()
    check_settings(settings)
    opts = settings.storage_options
    local_model, task_artifact, shipped_name = _load_model(spark, settings)
    info = read_info(local_model)
    heads = _attached_heads(str(local_model))
    warm_up = WarmUp(
        spark,
        TaskConfig(
            artifact=task_artifact,
            model_name=info.name,
            model_version=info.version,
            shipped_name=shipped_name,
            storage_options=dict(opts),
        ),
        _task_slots(spark),
    )
    with warm_up:
        fmt = resolve_input_format(settings.input, settings.input_format, opts)
        files_read = spark.sparkContext.accumulator(0)
        raw = read_notes(
            spark,
            settings.input,
            fmt,
            opts,
            columns=[settings.id_column, settings.text_column],
            counter=files_read,
        )
        validate_notes_schema(raw, settings.id_column, settings.text_column)
        # One scan of the input: the prepared notes are kept (memory, spilling to disk) and count,
        # fingerprint, duplicate marking and the tagging pass all read that copy.
        prepared = _persist(prepare_notes(raw, settings.id_column, settings.text_column))
        try:
            return _run_prepared(
                spark,
                settings,
                prepared,
                info,
                heads,
                task_artifact,
                shipped_name,
                files_read,
                before_commit,
                started,
            )
        except Exception as exc:
            # Storage that fails mid-run (in a task or on the driver) surfaces as one StorageError
            # naming the location, not as the SDK's error or a Spark task's traceback.
            where = {w: location(p, w) for w, p in (("output", settings.output), ("input", settings.input))}
            failure = storage_failure(exc, where, opts)
            if failure is None:
                raise
            raise failure from exc
        finally:
            prepared.unpersist()


def _persist(df: DataFrame) -> DataFrame:
    from pyspark import StorageLevel

    return df.persist(StorageLevel.MEMORY_AND_DISK)


def _run_prepared(
    spark: SparkSession,
    settings: ExtractSettings,
    prepared: DataFrame,
    info: Any,
    heads: dict[str, str | None],
    task_artifact: str,
    shipped_name: str | None,
    files_read: Any,
    before_commit: Callable[[], None] | None,
    started: float,
) -> RunSummary:
    from pyspark.sql import functions as F

    opts = settings.storage_options
    n_input, fingerprint, n_chars = input_stats(prepared)

    entities = open_table(settings.entities_path, settings.output_format, opts)
    relations = open_table(settings.relations_path, settings.output_format, opts)
    status = open_table(settings.status_path, settings.output_format, opts)
    previous = _read_table(spark, status, STATUS_SCHEMA)
    if previous is not None:
        previous = previous.where(F.col("model_version") == info.version)
        runs = {
            r["run_id"]: int(r["seq"])
            for r in previous.groupBy("run_id").agg(F.max("run_seq").alias("seq")).collect()
        }
    else:
        runs = {}

    notes = mark_duplicates(prepared)
    base = derived_run_id(fingerprint, info.name, info.version, settings.full)
    run_id, run_seq, rerun = choose_run(settings.run_id, base, runs)
    latest = latest_tagged(previous, info.version, run_id) if previous is not None else None
    planned = plan_actions(notes, latest, settings.full)

    cfg = TaskConfig(
        artifact=task_artifact,
        model_name=info.name,
        model_version=info.version,
        run_id=run_id,
        run_seq=run_seq,
        batch_size=settings.batch_size,
        max_batch_chars=settings.max_batch_chars,
        tagger_batch_size=settings.tagger_batch_size,
        shipped_name=shipped_name,
        entities_uri=entities.location.file_uri(),
        status_uri=status.location.file_uri(),
        relations_uri=relations.location.file_uri(),
        storage_options=dict(opts),
    )
    n_parts = _partitions(spark, settings, n_input, n_chars)
    log.info(
        "run %s (seq %d, rerun=%s): %d input rows in %d partitions", run_id, run_seq, rerun, n_input, n_parts
    )
    task_acc = spark.sparkContext.accumulator([], task_stats.TaskStatsParam())
    written = (
        _distribute(planned, n_parts)
        .mapInPandas(functools.partial(write_batches, cfg=cfg, stats=task_acc), WRITTEN_FILES_DDL)
        .collect()
    )
    task_list = sorted(task_acc.value, key=lambda r: int(r["partition"]))
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

    def _record_changes(table: Table, schema: pa.Schema, name: str) -> Changes:
        # Entities and relations are keyed by record alike: the same records' rows are dropped.
        changes = Changes(adds=list(new_files[name]))
        key = ["record_id", "model_version", "run_id"]
        changes.extend(plan_row_removal(table, key, _drop_record_rows, schema, f"part-{run_id}-cow"))
        return changes

    ent_changes = _record_changes(entities, ENTITIES_SCHEMA, ENTITIES_TABLE)
    rel_changes = _record_changes(relations, RELATIONS_SCHEMA, RELATIONS_TABLE)
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
        input_files_read=None if location(settings.input, "input").is_local else int(files_read.value),
        tasks=task_stats.summarise(task_list),
        task_list=task_list,
    )
    for note in summary.notes:
        log.warning("run %s: %s", run_id, note)
    log.info("run %s done: %s", run_id, summary.as_dict())
    return summary

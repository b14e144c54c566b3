"""The extraction job: notes table -> entities and record_status tables, incremental and idempotent.

Pure ``DataFrame -> DataFrame`` transforms (``prepare_notes``, ``mark_duplicates``,
``latest_tagged``, ``plan_actions``) and one orchestration function, ``run_extract``, which the
spark-submit entry point (``jobs/extract.py``) and ``medner extract`` both call. The session is
passed in: this module never creates one.

Semantics (docs/extraction.md has the long form):

- ``note_hash`` = SHA-256 of the note's UTF-8 text. A record is **skipped** when the latest
  status row of the same model version from another run has the same hash and status ``ok``,
  ``empty`` or ``skipped``; ``full=True`` re-tags everything.
- **Duplicate ids**: every row of a record_id that occurs more than once in the input gets an
  ``error`` status row ("duplicate record_id ..."), none is tagged, and that id's earlier entities
  of this model version are removed (which of the notes is the real one is unknown).
- **Run ids**: by default derived from the input's (record_id, note_hash) set, the model version
  and the mode, so re-running the same job on the same input is a re-run of the same run: its old
  status rows and entity rows are replaced in the same commit, and the tables end as one run would
  leave them. Airflow passes an explicit ``run_id`` instead. Only the latest run may be re-run.
- **Commits**: one per table, entities first, then record_status, each atomic. Until the first
  commit, both tables are unchanged; if the job died between the two, re-running it heals the
  tables (the changed records are still unmarked in record_status, so they are tagged again).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medner_udf.extraction.executor import (
    ACTION_DUPLICATE,
    ACTION_NULL_ID,
    ACTION_SKIP,
    ACTION_TAG,
    EMPTY,
    ENTITIES_SCHEMA,
    ENTITIES_TABLE,
    OK,
    SKIPPED,
    STATUS_SCHEMA,
    STATUS_TABLE,
    STATUSES,
    WRITTEN_FILES_DDL,
    UdfConfig,
    write_batches,
)
from medner_udf.extraction.tables import (
    FORMATS,
    Changes,
    DataFile,
    Table,
    TableError,
    detect_format,
    open_table,
    plan_row_removal,
)
from medner_udf.taggers.artifact import read_info

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

INPUT_FORMATS = ("auto", "parquet", "delta")
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_ID_TYPES = ("string", "int", "bigint", "smallint", "tinyint")


class ExtractError(ValueError):
    """Bad settings or input; raised before any work, the message names what is wrong."""


@dataclass(frozen=True)
class ExtractSettings:
    """Everything one extraction run needs (CLI flags and conf/extract.toml map onto these)."""

    input: str
    output: str
    model: str
    input_format: str = "auto"
    output_format: str = "delta"
    id_column: str = "record_id"
    text_column: str = "text"
    batch_size: int = 32
    max_batch_chars: int = 200_000
    tagger_batch_size: int | None = None
    rows_per_partition: int = 5_000
    partitions: int | None = None
    full: bool = False
    run_id: str | None = None
    ship_artifact: bool = True

    @property
    def entities_path(self) -> str:
        return str(Path(self.output) / ENTITIES_TABLE)

    @property
    def status_path(self) -> str:
        return str(Path(self.output) / STATUS_TABLE)


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
    entities_version: int | None = None
    status_version: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# Checks before any work


def check_settings(s: ExtractSettings) -> None:
    """Fail fast, naming the bad value, before Spark reads anything."""
    if s.input_format not in INPUT_FORMATS:
        raise ExtractError(f"input format must be one of {INPUT_FORMATS}, got {s.input_format!r}")
    if s.output_format not in FORMATS:
        raise ExtractError(f"output format must be one of {FORMATS}, got {s.output_format!r}")
    for name, value in (
        ("batch_size", s.batch_size),
        ("max_batch_chars", s.max_batch_chars),
        ("rows_per_partition", s.rows_per_partition),
        ("tagger_batch_size", 1 if s.tagger_batch_size is None else s.tagger_batch_size),
    ):
        if value < 1:
            raise ExtractError(f"{name} must be >= 1, got {value}")
    if s.partitions is not None and s.partitions < 1:
        raise ExtractError(f"partitions must be >= 1, got {s.partitions}")
    for name, col in (("id column", s.id_column), ("text column", s.text_column)):
        if not col or not col.strip():
            raise ExtractError(f"{name} must be a non-empty column name, got {col!r}")
    if s.id_column == s.text_column:
        raise ExtractError(f"id and text columns must differ, both are {s.id_column!r}")
    if s.run_id is not None and not RUN_ID_RE.match(s.run_id):
        raise ExtractError(
            f"run id {s.run_id!r} must be 1-100 letters, digits, '.', '_' or '-', starting alphanumeric"
        )
    if not Path(s.input).exists():
        raise ExtractError(f"input folder {s.input} does not exist")
    out = Path(s.output)
    if out.exists() and not out.is_dir():
        raise ExtractError(f"output {s.output} exists and is not a folder")
    for path in (s.entities_path, s.status_path):
        found = detect_format(path)
        if found is not None and found != s.output_format:
            raise ExtractError(
                f"output table {path} is {found}, but output format {s.output_format!r} was asked"
            )
    read_info(s.model)  # raises ArtifactError naming the folder when it is missing or incomplete


def resolve_input_format(path: str, requested: str) -> str:
    """``delta`` or ``parquet`` for the input folder; ``auto`` looks for ``_delta_log``."""
    p = Path(path)
    is_delta = (p / "_delta_log").is_dir()
    if requested == "delta" and not is_delta:
        raise ExtractError(f"input {path} is not a Delta table (no _delta_log folder)")
    if requested == "delta" or (requested == "auto" and is_delta):
        return "delta"
    if p.is_file() and p.suffix == ".parquet":
        return "parquet"
    if not any(p.rglob("*.parquet")):
        raise ExtractError(f"input folder {path} holds no table (neither a _delta_log nor .parquet files)")
    return "parquet"


def read_notes(spark: SparkSession, path: str, fmt: str) -> DataFrame:
    """The input as a DataFrame; Delta is read through its log (live files only)."""
    if fmt == "delta":
        from deltalake import DeltaTable

        uris = DeltaTable(path).file_uris()
        if not uris:
            raise ExtractError(f"input Delta table {path} has no data files")
        return spark.read.parquet(*uris)
    return spark.read.parquet(path)


def validate_notes_schema(df: DataFrame, id_column: str, text_column: str) -> None:
    """The id column must be a string or integer, the text column a string."""
    types = dict(df.dtypes)
    for role, col in (("id", id_column), ("text", text_column)):
        if col not in types:
            raise ExtractError(f"input has no {role} column {col!r}; its columns are {sorted(types)}")
    if types[id_column] not in _ID_TYPES:
        raise ExtractError(
            f"id column {id_column!r} has type {types[id_column]}; expected one of {list(_ID_TYPES)}"
        )
    if types[text_column] != "string":
        raise ExtractError(f"text column {text_column!r} has type {types[text_column]}; expected string")


# ---------------------------------------------------------------------------------------------------
# Pure transforms


def prepare_notes(df: DataFrame, id_column: str, text_column: str) -> DataFrame:
    """(record_id string, text, note_hash): ids cast to string, the text untouched (offsets!)."""
    from pyspark.sql import functions as F

    return df.select(
        F.col(id_column).cast("string").alias("record_id"),
        F.col(text_column).alias("text"),
        F.sha2(F.col(text_column), 256).alias("note_hash"),
    )


def mark_duplicates(notes: DataFrame) -> DataFrame:
    """Adds ``n_rows``: how many input rows share the record_id (1 for unique and null ids)."""
    from pyspark.sql import functions as F

    counts = (
        notes.where(F.col("record_id").isNotNull())
        .groupBy("record_id")
        .agg(F.count(F.lit(1)).alias("n_rows"))
    )
    return notes.join(counts, "record_id", "left").withColumn(
        "n_rows", F.coalesce(F.col("n_rows"), F.lit(1)).cast("long")
    )


def latest_tagged(status: DataFrame, model_version: str, exclude_run: str) -> DataFrame:
    """(record_id, prev_hash) from each record's latest status row of ``model_version`` in runs
    other than ``exclude_run``, when that row says its entities are current (ok/empty/skipped)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("record_id").orderBy(F.col("run_seq").desc())
    latest = (
        status.where(
            (F.col("model_version") == model_version)
            & (F.col("run_id") != exclude_run)
            & F.col("record_id").isNotNull()
        )
        .withColumn("_rank", F.row_number().over(w))
        .where(F.col("_rank") == 1)
    )
    return latest.where(F.col("status").isin(OK, EMPTY, SKIPPED)).select(
        "record_id", F.col("note_hash").alias("prev_hash")
    )


def plan_actions(notes: DataFrame, latest: DataFrame | None, full: bool) -> DataFrame:
    """Adds ``action`` (tag / skip / duplicate / null_id); skipped rows lose their text, so it is
    not shipped to the UDF for nothing. Columns: ``udf.INPUT_COLUMNS``."""
    from pyspark.sql import functions as F

    if latest is not None and not full:
        notes = notes.join(latest, "record_id", "left")
        unchanged = F.col("prev_hash").isNotNull() & (F.col("prev_hash") == F.col("note_hash"))
    else:
        unchanged = F.lit(False)
    action = (
        F.when(F.col("record_id").isNull(), F.lit(ACTION_NULL_ID))
        .when(F.col("n_rows") > 1, F.lit(ACTION_DUPLICATE))
        .when(unchanged, F.lit(ACTION_SKIP))
        .otherwise(F.lit(ACTION_TAG))
    )
    return notes.withColumn("action", action).select(
        "record_id",
        F.when(F.col("action") == ACTION_TAG, F.col("text")).alias("text"),
        "note_hash",
        "action",
        "n_rows",
    )


def input_fingerprint(notes: DataFrame) -> str:
    """An order-independent fingerprint of the input's (record_id, note_hash) multiset."""
    from pyspark.sql import functions as F

    row = notes.agg(
        F.count(F.lit(1)).alias("n"),
        F.bit_xor(F.xxhash64("record_id", "note_hash")).alias("a"),
        F.bit_xor(F.xxhash64("note_hash", "record_id", F.lit("medner"))).alias("b"),
    ).collect()[0]
    return f"{row['n']}:{row['a']}:{row['b']}"


def choose_run(requested: str | None, base: str, runs: dict[str, int]) -> tuple[str, int, bool]:
    """(run_id, run_seq, is_rerun) given the existing runs {run_id: run_seq} of this model version.

    Re-running is allowed for the latest run only: replacing an older one would roll records back
    behind newer runs. A derived id that names an older run (the input went back to an earlier
    state) becomes a new run ``<base>-<seq>``.
    """
    next_seq = max(runs.values(), default=-1) + 1
    latest = max(runs, key=lambda r: runs[r]) if runs else None
    if requested is not None:
        if requested not in runs:
            return requested, next_seq, False
        if requested != latest:
            raise ExtractError(
                f"run id {requested!r} is not the latest run (that is {latest!r}); only the latest may be re-run"
            )
        return requested, runs[requested], True
    if latest is not None and (latest == base or latest.startswith(base + "-")):
        return latest, runs[latest], True
    if base not in runs:
        return base, next_seq, False
    return f"{base}-{next_seq}", next_seq, False


# ---------------------------------------------------------------------------------------------------
# Orchestration


def _read_table(spark: SparkSession, table: Table) -> DataFrame | None:
    uris = table.file_uris()
    return spark.read.parquet(*uris) if uris else None


def _partitions(spark: SparkSession, s: ExtractSettings, n_input: int) -> int:
    if s.partitions is not None:
        return s.partitions
    return max(int(spark.sparkContext.defaultParallelism), math.ceil(n_input / s.rows_per_partition))


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
    fmt = resolve_input_format(settings.input, settings.input_format)
    raw = read_notes(spark, settings.input, fmt)
    validate_notes_schema(raw, settings.id_column, settings.text_column)
    n_input = raw.count()

    entities = open_table(settings.entities_path, settings.output_format)
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
    base = (
        "r"
        + hashlib.sha256(
            f"{input_fingerprint(notes)}|{info.name}|{info.version}|full={settings.full}".encode()
        ).hexdigest()[:16]
    )
    run_id, run_seq, rerun = choose_run(settings.run_id, base, runs)
    latest = latest_tagged(previous, info.version, run_id) if previous is not None else None
    planned = plan_actions(notes, latest, settings.full)

    shipped = None
    if settings.ship_artifact:
        shipped = _ship_artifact(spark, settings.model)
    cfg = UdfConfig(
        artifact=str(Path(settings.model).resolve()),
        model_name=info.name,
        model_version=info.version,
        run_id=run_id,
        run_seq=run_seq,
        batch_size=settings.batch_size,
        max_batch_chars=settings.max_batch_chars,
        tagger_batch_size=settings.tagger_batch_size,
        shipped_name=shipped,
        entities_uri=f"file://{entities.path}",
        status_uri=f"file://{status.path}",
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
    new_files: dict[str, list[DataFile]] = {ENTITIES_TABLE: [], STATUS_TABLE: []}
    for row in written:
        new_files[row["table"]].append(
            DataFile(row["path"], int(row["size"]), int(row["num_records"]), int(row["modification_time"]))
        )

    # Nothing lost silently: every input row must have its status row before anything is committed.
    new_status = _read_new(status, new_files[STATUS_TABLE], ["record_id", "status"])
    if new_status.num_rows != n_input:
        raise ExtractError(f"{n_input} input rows but {new_status.num_rows} status rows were written")

    # Entities of this model version to drop: those of every record this run processed (tagged,
    # empty, failed or duplicated) and, on a re-run, every row the earlier attempt wrote.
    processed = pc.filter(
        new_status["record_id"],
        pc.and_(pc.not_equal(new_status["status"], SKIPPED), pc.is_valid(new_status["record_id"])),
    )
    processed_set = pa.array(sorted(set(processed.to_pylist())), pa.string())

    def _drop_entities(rows: pa.Table) -> pa.Array:
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
            _drop_entities,
            ENTITIES_SCHEMA,
            f"part-{run_id}-cow",
        )
    )
    st_changes = Changes(adds=list(new_files[STATUS_TABLE]))
    st_changes.extend(plan_row_removal(status, ["run_id"], _drop_status, STATUS_SCHEMA, f"part-{run_id}-cow"))

    if before_commit is not None:
        before_commit()
    meta = {"medner.run_id": run_id, "medner.model_version": info.version, "medner.run_seq": str(run_seq)}
    entities.commit(ent_changes, ENTITIES_SCHEMA, meta)
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
        entities_version=entities.version(),
        status_version=status.version(),
        seconds=round(time.perf_counter() - started, 3),
    )
    log.info("run %s done: %s", run_id, summary.as_dict())
    return summary


def _read_new(table: Table, files: list[DataFile], columns: list[str]) -> pa.Table:
    parts = [pq.read_table(str(Path(table.path) / f.path), columns=columns) for f in files]
    if not parts:
        return pa.table({c: pa.array([], pa.string()) for c in columns})
    return pa.concat_tables(parts)


def _ship_artifact(spark: SparkSession, model: str) -> str:
    """Ship the artifact folder to every executor as a zip archive (``addArchive``, which Spark
    unpacks beside each executor; ``addFile`` refuses local folders on cluster masters).

    The zip lives in one cache folder under the system temp dir, named by the artifact's path,
    version and files (size, mtime): a nightly job re-uses it instead of leaving a new copy behind
    at every run, and Spark can still serve it to executors that join later in the session.
    Returns the SparkFiles name under which the unpacked folder appears on the workers.
    """
    import shutil
    import tempfile

    path = Path(model).resolve()
    info = read_info(path)
    stamp = sorted(
        (str(f.relative_to(path)), f.stat().st_size, f.stat().st_mtime_ns)
        for f in path.rglob("*")
        if f.is_file()
    )
    digest = hashlib.sha256(f"{path}|{info.version}|{stamp}".encode()).hexdigest()[:10]
    name = f"medner-model-{info.name}-{info.version}-{digest}"
    cache = Path(tempfile.gettempdir()) / "medner-shipped-artifacts"
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}.zip"
    if not archive.exists():
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cache))
        try:
            built = shutil.make_archive(str(staging / name), "zip", root_dir=path)
            Path(built).replace(archive)  # atomic: a concurrent job sees the whole zip or none
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    try:
        spark.sparkContext.addArchive(str(archive))
    except Exception as exc:
        # Re-adding the same archive in one session (a second run) is harmless.
        if "already" not in str(exc).lower():
            raise TableError(f"could not ship model artifact {path} to the executors: {exc}") from exc
    return archive.name


# ---------------------------------------------------------------------------------------------------
# Data quality of one run (the Airflow DAG's gate); pyarrow only, so it runs without Spark


def check_run_quality(output: str, run_id: str, model: str, n_input: int | None = None) -> list[str]:
    """Problems with run ``run_id``'s rows in ``output`` (empty list: all good).

    Checks: the run has status rows (as many as ``n_input`` input rows when given); each entity's
    offsets lie within its note (``0 <= begin < end <= n_chars``, ``len(text) == end - begin``);
    labels are among the model's entity types; scores lie in [0, 1]; every entity belongs to a
    record whose status row in this run says ``ok``. Messages hold counts and ids, never note text.
    """
    info = read_info(model)
    problems: list[str] = []
    tables = {}
    for name in (STATUS_TABLE, ENTITIES_TABLE):
        path = str(Path(output) / name)
        fmt = detect_format(path)
        if fmt is None:
            return [f"table {path} does not exist"]
        t = open_table(path, fmt)
        rows = t.read() if t.files() else None
        tables[name] = rows.filter(pc.equal(rows["run_id"], run_id)) if rows is not None else None
    status = tables[STATUS_TABLE]
    if status is None or status.num_rows == 0:
        return [f"run {run_id} has no status rows"]
    if n_input is not None and status.num_rows != n_input:
        problems.append(f"run {run_id}: {n_input} input rows but {status.num_rows} status rows")
    ents = tables[ENTITIES_TABLE]
    if ents is None or ents.num_rows == 0:
        return problems
    n_chars = {
        r: n
        for r, n, s in zip(
            status["record_id"].to_pylist(),
            status["n_chars"].to_pylist(),
            status["status"].to_pylist(),
            strict=True,
        )
        if s == OK
    }
    labels = set(info.entity_types)
    bad_offsets, not_ok, bad_labels, bad_scores = 0, 0, Counter[str](), 0
    for rid, b, e, text, label, score in zip(
        *(ents[c].to_pylist() for c in ("record_id", "begin", "end", "text", "label", "score")), strict=True
    ):
        if rid not in n_chars:
            not_ok += 1
        elif not (0 <= b < e <= n_chars[rid]) or len(text) != e - b:
            bad_offsets += 1
        if label not in labels:
            bad_labels[label] += 1
        if not 0.0 <= score <= 1.0:
            bad_scores += 1
    if bad_offsets:
        problems.append(f"run {run_id}: {bad_offsets} entities with offsets outside their note")
    if not_ok:
        problems.append(f"run {run_id}: {not_ok} entities of records without an 'ok' status row")
    if bad_labels:
        problems.append(f"run {run_id}: labels outside the model's set: {dict(bad_labels)}")
    if bad_scores:
        problems.append(f"run {run_id}: {bad_scores} scores outside [0, 1]")
    return problems

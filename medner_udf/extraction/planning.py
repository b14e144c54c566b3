"""The driver's plan for one run: what each input record gets, and which run this is.

Pure ``DataFrame -> DataFrame`` transforms (``prepare_notes``, ``mark_duplicates``,
``latest_tagged``, ``plan_actions``), the input's fingerprint, and the choice of run id. Nothing
here writes, creates a session or loads a model; ``job.run_extract`` strings them together.

- ``note_hash`` = SHA-256 of the note's UTF-8 text. A record is **skipped** when the latest
  status row of the same model version from another run has the same hash and status ``ok``,
  ``empty`` or ``skipped``; ``full=True`` re-tags everything.
- **Duplicate ids**: every row of a record_id that occurs more than once in the input gets an
  ``error`` status row ("duplicate record_id ..."), none is tagged, and that id's earlier entities
  of this model version are removed (which of the notes is the real one is unknown).
- **Run ids**: by default derived from the input's (record_id, note_hash) set, the model version
  and the mode, so re-running the same job on the same input is a re-run of the same run. Airflow
  passes an explicit ``run_id`` instead. Only the latest run may be re-run.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from medner_udf.extraction.schemas import (
    ACTION_DUPLICATE,
    ACTION_NULL_ID,
    ACTION_SKIP,
    ACTION_TAG,
    EMPTY,
    INPUT_COLUMNS,
    OK,
    SKIPPED,
)
from medner_udf.extraction.settings import ExtractError
from medner_udf.extraction.storage import delta_options, list_files, location

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame, SparkSession

_ID_TYPES = ("string", "int", "bigint", "smallint", "tinyint")


# ---------------------------------------------------------------------------------------------------
# The input


def read_notes(
    spark: SparkSession,
    path: str,
    fmt: str,
    storage_options: Mapping[str, str] | None = None,
    columns: Sequence[str] | None = None,
    counter: Any = None,
) -> DataFrame:
    """The input as a DataFrame; Delta is read through its log (live files only).

    A local input is read by Spark's own Parquet reader; a URI input by pyarrow inside the tasks
    (``read_parquet_files``), which needs no Hadoop connector. ``columns`` limits what is read
    (all when None); ``counter`` counts the files the tasks open (URI inputs only).
    """
    loc = location(path, "input")
    opts = dict(storage_options or {})
    if fmt == "delta":
        import pyarrow as pa
        from deltalake import DeltaTable

        dt = DeltaTable(loc.uri, storage_options=delta_options(loc, opts))
        uris = [str(u) for u in dt.file_uris()]
        if not uris:
            raise ExtractError(f"input Delta table {path} has no data files")
        if loc.is_local:
            return spark.read.parquet(*uris)
        return read_parquet_files(spark, uris, pa.schema(dt.schema().to_arrow()), opts, columns, counter)
    if loc.is_local:
        return spark.read.parquet(loc.uri)
    import pyarrow.parquet as pq

    from medner_udf.extraction.storage import filesystem

    if loc.uri.endswith(".parquet"):
        uris = [loc.uri]
    else:
        # Spark's rule: files and folders whose names start with '_' or '.' are not data.
        uris = [
            loc.join(rel).uri
            for rel, _ in list_files(loc, opts, "input")
            if rel.endswith(".parquet") and not any(part.startswith(("_", ".")) for part in rel.split("/"))
        ]
    if not uris:
        raise ExtractError(f"input folder {path} holds no .parquet files")
    fs, first = filesystem(location(uris[0]), opts)
    schema = pq.read_schema(first, filesystem=fs)
    return read_parquet_files(spark, uris, schema, opts, columns, counter)


def read_parquet_files(
    spark: SparkSession,
    uris: Sequence[str],
    schema: pa.Schema,
    storage_options: Mapping[str, str],
    columns: Sequence[str] | None = None,
    counter: Any = None,
) -> DataFrame:
    """Parquet files at ``uris`` (any storage) as one DataFrame, read by pyarrow in the tasks:
    one task per file, up to the session's default parallelism at once."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import from_arrow_type

    from medner_udf.extraction.reading import output_schema, read_files, spark_type

    def ddl_type(name: str, t: pa.DataType) -> str:
        simple = spark_type(t)
        if simple is not None:
            return simple
        try:  # other columns of a table (floats, timestamps, lists): Spark's own mapping
            return str(from_arrow_type(t).simpleString())
        except (TypeError, ValueError) as exc:
            raise ExtractError(f"column {name!r} has type {t}, which Spark cannot hold: {exc}") from exc

    wanted = [f for f in schema if columns is None or f.name in columns]
    selected = pa.schema(wanted)
    ddl = ", ".join(f"`{f.name}` {ddl_type(f.name, f.type)}" for f in output_schema(selected))
    files = spark.createDataFrame(
        spark.sparkContext.parallelize([(u,) for u in uris], max(1, len(uris))), "uri string"
    )
    read = functools.partial(
        read_files,
        columns=selected.names,
        schema=selected,
        storage_options=dict(storage_options),
        counter=counter,
    )
    return files.mapInArrow(read, ddl)


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
    not shipped to the executors for nothing. Columns: ``schemas.INPUT_COLUMNS``."""
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
    planned = notes.withColumn("action", action).withColumn(
        "text", F.when(F.col("action") == ACTION_TAG, F.col("text"))
    )
    return planned.select(*INPUT_COLUMNS)


# ---------------------------------------------------------------------------------------------------
# Run identity


def input_stats(notes: DataFrame) -> tuple[int, str, int]:
    """(row count, fingerprint, characters of text) of the input in one aggregation: the
    fingerprint is order-independent over the (record_id, note_hash) multiset."""
    from pyspark.sql import functions as F

    row = notes.agg(
        F.count(F.lit(1)).alias("n"),
        F.bit_xor(F.xxhash64("record_id", "note_hash")).alias("a"),
        F.bit_xor(F.xxhash64("note_hash", "record_id", F.lit("medner"))).alias("b"),
        F.sum(F.length("text")).alias("chars"),
    ).collect()[0]
    return int(row["n"]), f"{row['n']}:{row['a']}:{row['b']}", int(row["chars"] or 0)


def input_fingerprint(notes: DataFrame) -> str:
    """An order-independent fingerprint of the input's (record_id, note_hash) multiset."""
    return input_stats(notes)[1]


def choose_partitions(
    n_input: int,
    task_slots: int,
    rows_per_partition: int,
    n_chars: int = 0,
    chars_per_partition: int | None = None,
) -> int:
    """Partitions for the tagging pass: a whole number of waves over the job's task slots, each
    partition at most ``rows_per_partition`` rows and (on average) ``chars_per_partition``
    characters, as few waves as those bounds allow.

    A count that is not a multiple of the slots leaves the last wave part empty: 12,000 notes at
    5,000 per partition on 2 slots were 3 partitions, the third ran alone on one core while the
    other idled. Here they are 4 of 3,000 (2 full waves). An input smaller than the slots still
    gets one partition per slot (some empty) so no core idles in the only wave. The character
    bound keeps a table of long notes (discharge summaries, scanned reports) in tasks of bounded
    text, whatever their count.
    """
    if (
        task_slots < 1
        or rows_per_partition < 1
        or (chars_per_partition is not None and chars_per_partition < 1)
    ):
        raise ValueError(
            "task_slots, rows_per_partition and chars_per_partition must be >= 1, got "
            f"{task_slots}, {rows_per_partition}, {chars_per_partition}"
        )
    tasks = math.ceil(max(0, n_input) / rows_per_partition)
    if chars_per_partition is not None:
        tasks = max(tasks, math.ceil(max(0, n_chars) / chars_per_partition))
    waves = max(1, math.ceil(tasks / task_slots))
    return task_slots * waves


def derived_run_id(fingerprint: str, model_name: str, model_version: str, full: bool) -> str:
    """The default run id: the same input, model version and mode always give the same id."""
    key = f"{fingerprint}|{model_name}|{model_version}|full={full}"
    return "r" + hashlib.sha256(key.encode()).hexdigest()[:16]


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

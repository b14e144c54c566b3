"""SQL over the job's tables: register ``entities``, ``relations`` and ``record_status`` as Spark temp views.

Delta tables are read through their log (``DeltaTable(path).file_uris()``: the live files only),
Parquet tables through their manifest; never the raw folder, which also holds removed and
uncommitted files.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from medner_udf.extraction.schemas import TABLE_SCHEMAS, spark_ddl
from medner_udf.extraction.storage import location
from medner_udf.extraction.tables import TableError, detect_format, open_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

VIEWS = TABLE_SCHEMAS


def table_frame(
    spark: SparkSession, path: str | Path, name: str, storage_options: Mapping[str, str] | None = None
) -> DataFrame:
    """One output table as a DataFrame (empty, with the right schema, when it does not exist yet).

    Local tables are read by Spark's Parquet reader, tables at a URI by pyarrow in the tasks
    (``planning.read_parquet_files``: no Hadoop connector needed)."""
    schema = VIEWS[name]
    fmt = detect_format(path, storage_options)
    uris = open_table(path, fmt, storage_options).file_uris() if fmt is not None else []
    if not uris:
        return spark.createDataFrame([], spark_ddl(schema))
    if location(path).is_local:
        return spark.read.schema(spark_ddl(schema)).parquet(*uris)
    from medner_udf.extraction.planning import read_parquet_files

    return read_parquet_files(spark, uris, schema, storage_options or {})


def register_tables(
    spark: SparkSession, output: str | Path, storage_options: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Register ``entities``, ``relations`` and ``record_status`` from the job's output folder as
    temp views (an absent table, e.g. ``relations`` of an output written before it existed, is an
    empty view).

    Returns the number of live files behind each view. Raises TableError when the folder holds
    none of the tables.
    """
    out = location(output, "output")
    found = {name: detect_format(out.join(name).uri, storage_options) for name in VIEWS}
    if all(fmt is None for fmt in found.values()):
        raise TableError(f"{output} holds no medner tables ({', '.join(VIEWS)}); run `medner extract` first")
    n_files = {}
    for name, fmt in found.items():
        path = out.join(name).uri
        table_frame(spark, path, name, storage_options).createOrReplaceTempView(name)
        n_files[name] = len(open_table(path, fmt, storage_options).file_uris()) if fmt is not None else 0
    return n_files


def run_sql(
    spark: SparkSession, output: str | Path, query: str, storage_options: Mapping[str, str] | None = None
) -> DataFrame:
    """``query`` over the views of ``output``."""
    if not query.strip():
        raise ValueError("the SQL query is empty")
    register_tables(spark, output, storage_options)
    return spark.sql(query)

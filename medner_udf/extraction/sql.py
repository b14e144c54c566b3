"""SQL over the job's tables: register ``entities``, ``relations`` and ``record_status`` as Spark temp views.

Delta tables are read through their log (``DeltaTable(path).file_uris()``: the live files only),
Parquet tables through their manifest; never the raw folder, which also holds removed and
uncommitted files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from medner_udf.extraction.schemas import TABLE_SCHEMAS, spark_ddl
from medner_udf.extraction.tables import TableError, detect_format, open_table

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

VIEWS = TABLE_SCHEMAS


def table_frame(spark: SparkSession, path: str | Path, name: str) -> DataFrame:
    """One output table as a DataFrame (empty, with the right schema, when it does not exist yet)."""
    schema = VIEWS[name]
    fmt = detect_format(path)
    uris = open_table(path, fmt).file_uris() if fmt is not None else []
    if not uris:
        return spark.createDataFrame([], spark_ddl(schema))
    return spark.read.schema(spark_ddl(schema)).parquet(*uris)


def register_tables(spark: SparkSession, output: str | Path) -> dict[str, int]:
    """Register ``entities``, ``relations`` and ``record_status`` from the job's output folder as
    temp views (an absent table, e.g. ``relations`` of an output written before it existed, is an
    empty view).

    Returns the number of live files behind each view. Raises TableError when the folder holds
    none of the tables.
    """
    out = Path(output)
    found = {name: detect_format(out / name) for name in VIEWS}
    if all(fmt is None for fmt in found.values()):
        raise TableError(f"{output} holds no medner tables ({', '.join(VIEWS)}); run `medner extract` first")
    n_files = {}
    for name, fmt in found.items():
        table_frame(spark, out / name, name).createOrReplaceTempView(name)
        n_files[name] = len(open_table(out / name, fmt).file_uris()) if fmt is not None else 0
    return n_files


def run_sql(spark: SparkSession, output: str | Path, query: str) -> DataFrame:
    """``query`` over the views of ``output``."""
    if not query.strip():
        raise ValueError("the SQL query is empty")
    register_tables(spark, output)
    return spark.sql(query)

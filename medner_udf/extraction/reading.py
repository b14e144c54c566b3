"""Reading Parquet files through pyarrow's filesystems inside Spark tasks (executor side).

Spark's own Parquet reader reaches object stores only through Hadoop connector jars, which many
clusters (and these machines) lack; so for a URI input or table, the driver lists the files (the
Delta log, or a listing of the folder) and each task reads whole files with pyarrow
(``mapInArrow`` over a DataFrame of file URIs). Plain pyarrow code: no Spark import, no session.

Every file a task opens adds one to ``counter`` (a Spark accumulator on the driver side), which the
job reports as ``input_files_read``: how many times the input's files were read this run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medner_udf.extraction.storage import filesystem, location

# Arrow type -> Spark SQL type, for the flat columns medner reads.
_SPARK_TYPES = {
    pa.string(): "string",
    pa.large_string(): "string",
    pa.int8(): "tinyint",
    pa.int16(): "smallint",
    pa.int32(): "int",
    pa.int64(): "bigint",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "boolean",
}
ROWS_PER_BATCH = 1024


def spark_type(t: pa.DataType) -> str | None:
    """The Spark SQL type name of a flat Arrow type, None for types medner does not read."""
    if pa.types.is_string_view(t):
        return "string"
    return _SPARK_TYPES.get(t)


def output_schema(schema: pa.Schema) -> pa.Schema:
    """``schema`` with large strings as plain strings (what Spark's Arrow conversion expects)."""
    return pa.schema(
        [
            pa.field(f.name, pa.string() if spark_type(f.type) == "string" else f.type, nullable=True)
            for f in schema
        ]
    )


def read_files(
    uris: Iterator[pa.RecordBatch],
    columns: Sequence[str],
    schema: pa.Schema,
    storage_options: Mapping[str, str],
    counter: Any = None,
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` function: for every file URI in the ``uri`` column of the incoming batches,
    stream ``columns`` of that Parquet file as record batches of ``schema``."""
    target = output_schema(schema)
    for batch in uris:
        for uri in batch.column("uri").to_pylist():
            fs, path = filesystem(location(uri), storage_options)
            if counter is not None:
                counter.add(1)
            with fs.open_input_file(path) as fh:
                pf = pq.ParquetFile(fh)
                for rb in pf.iter_batches(batch_size=ROWS_PER_BATCH, columns=list(columns)):
                    yield pa.RecordBatch.from_arrays(
                        [rb.column(name).cast(target.field(name).type) for name in target.names],
                        schema=target,
                    )

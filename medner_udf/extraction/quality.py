"""The data-quality gate over one run's rows: what the Airflow DAG checks after each extraction.

pyarrow only (no Spark, no torch): the DAG runs it in the project's Python as a plain task.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from medner_udf.extraction.schemas import ENTITIES_TABLE, OK, STATUS_TABLE
from medner_udf.extraction.settings import resolve_input_format
from medner_udf.extraction.tables import detect_format, open_table
from medner_udf.taggers.artifact import read_info


def _run_rows(output: str, name: str, run_id: str) -> pa.Table | None:
    """The rows of table ``name`` under ``output`` written by ``run_id``; None when the table is
    missing or has no data files."""
    path = str(Path(output) / name)
    fmt = detect_format(path)
    if fmt is None:
        return None
    table = open_table(path, fmt)
    if not table.files():
        return None
    rows = table.read()
    return rows.filter(pc.equal(rows["run_id"], run_id))


def count_input_rows(path: str, input_format: str = "auto") -> int:
    """Rows of the notes input at ``path`` as the job reads them (``planning.read_notes``): a Delta
    table through its log (live files only, never the removed ones still in the folder), Parquet
    as Spark reads a folder (files and folders starting with ``_`` or ``.`` left out)."""
    import pyarrow.dataset as ds

    fmt = resolve_input_format(path, input_format)
    if fmt == "delta":
        from deltalake import DeltaTable

        uris = DeltaTable(path).file_uris()
        return int(ds.dataset(uris, format="parquet").count_rows()) if uris else 0
    return int(ds.dataset(path, format="parquet", ignore_prefixes=[".", "_"]).count_rows())


def check_run_quality(output: str, run_id: str, model: str, n_input: int | None = None) -> list[str]:
    """Problems with run ``run_id``'s rows in ``output`` (empty list: all good).

    Checks: the run has status rows (as many as ``n_input`` input rows when given); each entity's
    offsets lie within its note (``0 <= begin < end <= n_chars``, ``len(text) == end - begin``);
    labels are among the model's entity types; scores lie in [0, 1]; every entity belongs to a
    record whose status row in this run says ``ok``. Messages hold counts and ids, never note text.
    """
    info = read_info(model)
    for name in (STATUS_TABLE, ENTITIES_TABLE):
        path = Path(output) / name
        if detect_format(path) is None:
            return [f"table {path} does not exist"]
    status = _run_rows(output, STATUS_TABLE, run_id)
    if status is None or status.num_rows == 0:
        return [f"run {run_id} has no status rows"]
    problems: list[str] = []
    if n_input is not None and status.num_rows != n_input:
        problems.append(f"run {run_id}: {n_input} input rows but {status.num_rows} status rows")
    ents = _run_rows(output, ENTITIES_TABLE, run_id)
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

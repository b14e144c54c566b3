"""The data-quality gate over one run's rows: what the Airflow DAG checks after each extraction.

pyarrow only (no Spark, no torch): the DAG runs it in the project's Python as a plain task. Output,
input and model are paths or URIs, read with the job's storage options.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from medner_udf.extraction.schemas import (
    ASSERTION_VALUES,
    ENTITIES_TABLE,
    OK,
    RELATION_TYPES,
    RELATIONS_TABLE,
    STATUS_TABLE,
)
from medner_udf.extraction.settings import resolve_input_format
from medner_udf.extraction.storage import delta_options, filesystem, local_copy, location
from medner_udf.extraction.tables import detect_format, open_table
from medner_udf.taggers.artifact import read_info


def _run_rows(
    output: str, name: str, run_id: str, storage_options: Mapping[str, str] | None = None
) -> pa.Table | None:
    """The rows of table ``name`` under ``output`` (a path or URI) written by ``run_id``; None when
    the table is missing or has no data files."""
    path = location(output, "output").join(name).uri
    fmt = detect_format(path, storage_options)
    if fmt is None:
        return None
    table = open_table(path, fmt, storage_options)
    if not table.files():
        return None
    rows = table.read()
    return rows.filter(pc.equal(rows["run_id"], run_id))


def count_input_rows(
    path: str, input_format: str = "auto", storage_options: Mapping[str, str] | None = None
) -> int:
    """Rows of the notes input at ``path`` as the job reads them (``planning.read_notes``): a Delta
    table through its log (live files only, never the removed ones still in the folder), Parquet
    as Spark reads a folder (files and folders starting with ``_`` or ``.`` left out)."""
    import pyarrow.dataset as ds

    loc = location(path, "input")
    fs, base = filesystem(loc, storage_options)
    fmt = resolve_input_format(path, input_format, storage_options)
    if fmt == "delta":
        from deltalake import DeltaTable

        dt = DeltaTable(loc.uri, storage_options=delta_options(loc, storage_options))
        # The live files' URIs as paths of the filesystem (``s3://b/k`` -> ``b/k``, ``file:///x`` -> ``/x``).
        files = [str(u).split("://", 1)[-1] for u in dt.file_uris()]
        return int(ds.dataset(files, format="parquet", filesystem=fs).count_rows()) if files else 0
    return int(ds.dataset(base, format="parquet", filesystem=fs, ignore_prefixes=[".", "_"]).count_rows())


def check_run_quality(
    output: str,
    run_id: str,
    model: str,
    n_input: int | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> list[str]:
    """Problems with run ``run_id``'s rows in ``output`` (empty list: all good).

    Checks: the run has status rows (as many as ``n_input`` input rows when given); each entity's
    offsets lie within its note (``0 <= begin < end <= n_chars``, ``len(text) == end - begin``);
    labels are among the model's entity types; scores lie in [0, 1]; every entity belongs to a
    record whose status row in this run says ``ok``; ``assertion`` is null or one of
    ``ASSERTION_VALUES``, with a score in [0, 1] exactly when it is set; every relation's head and
    tail are entity rows (span and label) of the same record and run, its score in [0, 1], and each
    record's relation count matches its status row. Messages hold counts and ids, never note text.
    A table written before the relations existed (no ``relations`` table) passes those checks.
    """
    opts = storage_options
    info = read_info(local_copy(location(model, "model"), opts, "artifact.json", "model"))
    for name in (STATUS_TABLE, ENTITIES_TABLE):
        path = location(output, "output").join(name).uri
        if detect_format(path, opts) is None:
            return [f"table {path} does not exist"]
    status = _run_rows(output, STATUS_TABLE, run_id, opts)
    if status is None or status.num_rows == 0:
        return [f"run {run_id} has no status rows"]
    problems: list[str] = []
    if n_input is not None and status.num_rows != n_input:
        problems.append(f"run {run_id}: {n_input} input rows but {status.num_rows} status rows")
    ents = _run_rows(output, ENTITIES_TABLE, run_id, opts)
    rels = _run_rows(output, RELATIONS_TABLE, run_id, opts)
    problems += _relation_problems(run_id, status, ents, rels)
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
    problems += _assertion_problems(run_id, ents)
    return problems


def _assertion_problems(run_id: str, ents: pa.Table) -> list[str]:
    if "assertion" not in ents.column_names:
        return []
    bad_values: Counter[str] = Counter()
    bad_scores = 0
    for value, score in zip(ents["assertion"].to_pylist(), ents["assertion_score"].to_pylist(), strict=True):
        if value is not None and value not in ASSERTION_VALUES:
            bad_values[value] += 1
        if (value is None) != (score is None) or (score is not None and not 0.0 <= score <= 1.0):
            bad_scores += 1
    problems = []
    if bad_values:
        problems.append(f"run {run_id}: assertions outside {list(ASSERTION_VALUES)}: {dict(bad_values)}")
    if bad_scores:
        problems.append(
            f"run {run_id}: {bad_scores} assertion scores outside [0, 1] or not matching their assertion"
        )
    return problems


def _relation_problems(
    run_id: str, status: pa.Table, ents: pa.Table | None, rels: pa.Table | None
) -> list[str]:
    """Every relation's ends are entities (span and label) of the same record and run; scores in
    [0, 1]; each record's ``n_relations`` (when the status table has it) counts its rows."""
    spans: set[tuple[str, int, int, str]] = set()
    if ents is not None:
        spans = set(zip(*(ents[c].to_pylist() for c in ("record_id", "begin", "end", "label")), strict=True))
    per_record: Counter[str] = Counter()
    dangling, bad_scores = 0, 0
    bad_types: Counter[str] = Counter()
    if rels is not None:
        columns = (
            "record_id",
            "head_begin",
            "head_end",
            "head_label",
            "tail_begin",
            "tail_end",
            "tail_label",
        )
        for rid, hb, he, hl, tb, te, tl, score in zip(
            *(rels[c].to_pylist() for c in (*columns, "score")), strict=True
        ):
            per_record[rid] += 1
            if (rid, hb, he, hl) not in spans or (rid, tb, te, tl) not in spans:
                dangling += 1
            if score is None or not 0.0 <= score <= 1.0:
                bad_scores += 1
        bad_types.update(t for t in rels["type"].to_pylist() if t not in RELATION_TYPES)
    problems = []
    if dangling:
        problems.append(
            f"run {run_id}: {dangling} relations whose head or tail is not an entity of the same record and run"
        )
    if bad_scores:
        problems.append(f"run {run_id}: {bad_scores} relation scores outside [0, 1]")
    if bad_types:
        problems.append(f"run {run_id}: relation types outside {list(RELATION_TYPES)}: {dict(bad_types)}")
    if "n_relations" in status.column_names:
        counted = {
            r: n or 0
            for r, n in zip(status["record_id"].to_pylist(), status["n_relations"].to_pylist(), strict=True)
        }
        wrong = sorted(
            str(r) for r in set(counted) | set(per_record) if counted.get(r, 0) != per_record.get(r, 0)
        )
        if wrong:
            problems.append(
                f"run {run_id}: {len(wrong)} records whose n_relations differs from their relation rows: "
                f"{wrong[:5]}"
            )
    return problems

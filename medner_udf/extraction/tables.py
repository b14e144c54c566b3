"""The job's output tables: Delta (through delta-rs) or plain Parquet, each changed by one commit.

Both formats work the same way: executors write Parquet data files into the table folder, and the
driver makes them visible in a single commit that may also remove files (a re-tag replaces rows).
Until that commit, readers see the previous version; files of a job that died before it are never
referenced and are invisible to every correct reader.

- **delta**: the commit is one Delta transaction (``DeltaTable.create_write_transaction`` with
  ``AddAction``/``RemoveAction``; ``create_table_with_add_actions`` for the first). Protocol
  reader 1 / writer 2: Delta on Spark, delta-rs, DuckDB and others read it through its log.
- **parquet**: the commit atomically replaces ``_medner_manifest.json`` (write a temporary file,
  then ``os.replace``), which lists the live files. Readers must go through ``file_uris()``;
  reading the folder directly also picks up uncommitted and removed files (as with Delta).
  Local or shared POSIX filesystems only: ``os.replace`` is what makes the commit atomic.

Row removal is copy-on-write: a data file with rows to drop is rewritten without them (new file
added, old file removed) in the same commit. The cost is proportional to the files touched.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medner_udf.errors import ConflictError, MednerError

log = logging.getLogger(__name__)

FORMATS = ("delta", "parquet")
MANIFEST = "_medner_manifest.json"


class TableError(MednerError, ValueError):
    """A table location or commit that cannot be used; the message names the path."""


class TableConflictError(TableError, ConflictError):
    """Another writer created or changed the table between this job's read and its commit."""


CONFLICT_HINT = (
    "another job wrote this table at the same time; nothing of this run was committed, so re-run it "
    "(runs writing one output must not overlap: the DAG sets max_active_runs=1)"
)


def _delta_commit_error(path: str, exc: Exception) -> TableError:
    """delta-rs's commit failure as a ``TableError``: a conflict (table already created, concurrent
    transaction) or another refusal; its message names the table and delta-rs's first line."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    lowered = first_line.lower()
    if "already exists" in lowered or "conflict" in lowered or "concurrent" in lowered:
        return TableConflictError(
            f"Delta commit to {path} conflicted with another writer ({first_line})", hint=CONFLICT_HINT
        )
    return TableError(f"Delta commit to {path} failed ({first_line})")


@dataclass(frozen=True)
class DataFile:
    """A Parquet file inside a table folder (``path`` relative to it)."""

    path: str
    size: int
    num_records: int
    modification_time: int


@dataclass
class Changes:
    """Files one commit adds and removes (relative paths)."""

    adds: list[DataFile] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.adds or self.removes)

    def extend(self, other: Changes) -> None:
        self.adds.extend(other.adds)
        self.removes.extend(other.removes)


def local_path(uri: str) -> str:
    """A filesystem path from a plain path or a ``file://`` URI."""
    return uri[len("file://") :] if uri.startswith("file://") else uri


class Table(ABC):
    """One output table at ``path`` (a local folder; Delta tables may live wherever delta-rs can)."""

    format: str

    def __init__(self, path: str | Path) -> None:
        self.path = os.path.abspath(local_path(str(path)))

    @abstractmethod
    def exists(self) -> bool: ...

    @abstractmethod
    def files(self) -> list[str]:
        """Relative paths of the live data files (empty when the table does not exist)."""

    @abstractmethod
    def version(self) -> int | None:
        """The committed version, or None when the table does not exist."""

    @abstractmethod
    def commit(self, changes: Changes, schema: pa.Schema, metadata: dict[str, str]) -> None:
        """Apply ``changes`` in one atomic commit (creating the table on first use)."""

    def file_uris(self) -> list[str]:
        """Absolute URIs of the live data files: what Spark or pyarrow should read."""
        return [f"file://{self.path}/{p}" for p in self.files()]

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All live rows as one Arrow table (small tables and tests; Spark reads ``file_uris``)."""
        parts = [pq.read_table(os.path.join(self.path, p), columns=columns) for p in self.files()]
        if not parts:
            raise TableError(f"table {self.path} has no data files")
        return pa.concat_tables(parts)

    def new_file_path(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}.zstd.parquet"


class DeltaTableStore(Table):
    """A Delta table written through delta-rs (``deltalake``)."""

    format = "delta"

    def exists(self) -> bool:
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self.path))

    def _dt(self) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(self.path)

    def files(self) -> list[str]:
        if not self.exists():
            return []
        # Paths as written in the log: relative for files this job adds (no partitions).
        return [str(p) for p in self._dt().get_add_actions(flatten=True).column("path").to_pylist()]

    def file_uris(self) -> list[str]:
        if not self.exists():
            return []
        return [str(u) for u in self._dt().file_uris()]

    def version(self) -> int | None:
        return int(self._dt().version()) if self.exists() else None

    def commit(self, changes: Changes, schema: pa.Schema, metadata: dict[str, str]) -> None:
        from deltalake import CommitProperties, Schema
        from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

        if not changes:
            return
        adds = [
            AddAction(
                path=f.path,
                size=f.size,
                partition_values={},
                modification_time=f.modification_time,
                data_change=True,
                stats=json.dumps({"numRecords": f.num_records}),
            )
            for f in changes.adds
        ]
        from deltalake.exceptions import DeltaError

        props = CommitProperties(custom_metadata=dict(metadata))
        try:
            if not self.exists():
                if changes.removes:
                    raise TableError(f"cannot remove files from {self.path}: the table does not exist yet")
                create_table_with_add_actions(
                    self.path, Schema.from_arrow(schema), adds, mode="error", commit_properties=props
                )
                return
            now = int(time.time() * 1000)
            removes = [
                RemoveAction(path=p, data_change=True, deletion_timestamp=now) for p in changes.removes
            ]
            actions: list[Any] = [*adds, *removes]
            self._dt().create_write_transaction(
                actions, mode="append", schema=schema, commit_properties=props
            )
        except DeltaError as exc:  # CommitFailedError and the generic "table already exists" alike
            raise _delta_commit_error(self.path, exc) from exc


class ParquetTableStore(Table):
    """Plain Parquet files plus an atomically replaced manifest of the live ones."""

    format = "parquet"

    @property
    def _manifest(self) -> Path:
        return Path(self.path) / MANIFEST

    def exists(self) -> bool:
        return self._manifest.is_file()

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self._manifest.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"version": -1, "files": [], "history": []}
        except json.JSONDecodeError as exc:
            raise TableError(f"manifest {self._manifest} is not valid JSON: {exc.msg}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("files"), list):
            raise TableError(f"manifest {self._manifest} lacks a 'files' list")
        return raw

    def files(self) -> list[str]:
        return [str(f["path"]) for f in self._load()["files"]]

    def version(self) -> int | None:
        return int(self._load()["version"]) if self.exists() else None

    def commit(self, changes: Changes, schema: pa.Schema, metadata: dict[str, str]) -> None:
        if not changes:
            return
        state = self._load()
        live = {str(f["path"]): f for f in state["files"]}
        unknown = [p for p in changes.removes if p not in live]
        if unknown:
            raise TableError(f"cannot remove files not in {self.path}: {unknown[:3]}")
        for p in changes.removes:
            del live[p]
        for f in changes.adds:
            if not (Path(self.path) / f.path).is_file():
                raise TableError(f"file {f.path} to add does not exist in {self.path}")
            live[f.path] = {"path": f.path, "size": f.size, "num_records": f.num_records}
        version = int(state["version"]) + 1
        new_state = {
            "version": version,
            "schema": [[fld.name, str(fld.type)] for fld in schema],
            "files": sorted(live.values(), key=lambda f: str(f["path"])),
            "history": [*state.get("history", []), {"version": version, **metadata}],
        }
        Path(self.path).mkdir(parents=True, exist_ok=True)
        tmp = Path(self.path) / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
        tmp.write_text(json.dumps(new_state, indent=1) + "\n", encoding="utf-8")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self._manifest)  # the commit point: atomic on POSIX filesystems


def open_table(path: str | Path, fmt: str) -> Table:
    """A table handle for ``fmt`` (``delta`` or ``parquet``) at ``path``."""
    if fmt == "delta":
        return DeltaTableStore(path)
    if fmt == "parquet":
        return ParquetTableStore(path)
    raise TableError(f"table format must be one of {FORMATS}, got {fmt!r}")


def detect_format(path: str | Path) -> str | None:
    """``delta`` / ``parquet`` for an existing medner table at ``path``, None when there is none."""
    p = Path(local_path(str(path)))
    if (p / "_delta_log").is_dir():
        return "delta"
    if (p / MANIFEST).is_file():
        return "parquet"
    return None


def plan_row_removal(
    table: Table,
    columns: Sequence[str],
    drop: Callable[[pa.Table], pa.Array],
    schema: pa.Schema,
    prefix: str,
) -> Changes:
    """Copy-on-write removal of the rows where ``drop(file_rows[columns])`` is true.

    Reads only ``columns`` of each live file to decide; a file with no such rows is untouched, a
    file of only such rows is removed, any other file is rewritten without them (the new file is
    written now and becomes live only with the commit).
    """
    changes = Changes()
    for rel in table.files():
        full = os.path.join(table.path, rel)
        keys = pq.read_table(full, columns=list(columns))
        mask = drop(keys)
        n_drop = int(pc.sum(mask).as_py() or 0)
        if n_drop == 0:
            continue
        changes.removes.append(rel)
        if n_drop == keys.num_rows:
            continue
        rows = pq.read_table(full, schema=schema).filter(pc.invert(mask))
        new_rel = table.new_file_path(prefix)
        new_full = os.path.join(table.path, new_rel)
        pq.write_table(rows, new_full, compression="zstd")
        changes.adds.append(
            DataFile(new_rel, os.path.getsize(new_full), rows.num_rows, int(time.time() * 1000))
        )
    return changes

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
  Local or shared POSIX filesystems only: ``os.replace`` is what makes the commit atomic, and a
  lock file serialises concurrent committers. Object stores have no atomic rename, so this format
  is refused there (use ``delta``, whose commit is a conditional put of the next log entry).

Locations are local paths or URIs (``storage.location``); the driver reads and writes files through
pyarrow's filesystems and commits Delta tables through delta-rs, both with the storage options.
Every Delta add action carries per-file statistics (``numRecords``, and ``minValues``,
``maxValues``, ``nullCount`` of the key and filter columns), read from the Parquet footer, so
engines that skip files by min/max (Spark, Trino, DuckDB, delta-rs) can skip ours.

Row removal is copy-on-write: a data file with rows to drop is rewritten without them (new file
added, old file removed) in the same commit. The cost is proportional to the files touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from medner_udf.errors import ConflictError, MednerError
from medner_udf.extraction.schemas import ENTITIES_TABLE, RELATIONS_TABLE
from medner_udf.extraction.storage import (
    Location,
    delta_options,
    file_type,
    filesystem,
    location,
    scrub,
    storage_failure,
)

log = logging.getLogger(__name__)

FORMATS = ("delta", "parquet")
MANIFEST = "_medner_manifest.json"
# Columns without statistics: long or unique strings that no query filters on by range.
NO_STATS_COLUMNS = frozenset({"text", "error", "note_hash"})


class TableError(MednerError, ValueError):
    """A table location or commit that cannot be used; the message names the path."""


# Commit metadata key of the run that made a commit (job.py sets it on every commit).
RUN_ID_KEY = "medner.run_id"
# Tables keyed by record: a concurrent commit with rows of the same records conflicts.
RECORD_KEYED_TABLES = frozenset({ENTITIES_TABLE, RELATIONS_TABLE})
# Attempts of one Delta commit that keeps losing the race for the next version to commuting commits.
COMMIT_ATTEMPTS = 20

CONFLICT_HINT = (
    "another job wrote this table at the same time and this commit was not made; re-running this job "
    "is safe: it replaces whatever rows of this run did land (runs writing one output should not "
    "overlap: the DAG sets max_active_runs=1)"
)


class CommitConflictError(TableError, ConflictError):
    """Another writer changed the table in a way that conflicts with this commit (both removed the
    same file, or both created the table, say); this commit did not happen and the table holds the
    other writer's version. Re-running is safe."""

    def __init__(self, message: str, hint: str | None = CONFLICT_HINT) -> None:
        super().__init__(message, hint)


@dataclass(frozen=True)
class DataFile:
    """A Parquet file inside a table folder (``path`` relative to it)."""

    path: str
    size: int
    num_records: int
    modification_time: int
    # The Delta ``stats`` JSON; None: read from the file's Parquet footer at commit time.
    stats: str | None = None


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


P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T", bound="Table")


def storage_errors(method: Callable[Concatenate[T, P], R]) -> Callable[Concatenate[T, P], R]:
    """A table method whose storage failures (pyarrow's ``OSError``, delta-rs's object-store
    errors) surface as a ``StorageError`` naming the table, secrets scrubbed, instead of the SDK's
    raw error; anything else passes through unchanged."""

    @functools.wraps(method)
    def wrapper(self: T, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except Exception as exc:
            failure = storage_failure(exc, {"table": self.location}, self.storage_options)
            if failure is None:
                raise
            raise failure from exc

    return wrapper  # type: ignore[return-value]  # functools.wraps's _Wrapped is that callable


class Table(ABC):
    """One output table at ``path``: a local folder or a URI (``storage.location``)."""

    format: str

    def __init__(self, path: str | Path, storage_options: Mapping[str, str] | None = None) -> None:
        self.location: Location = location(path, "table")
        self.storage_options = dict(storage_options or {})
        self.path = self.location.uri  # an absolute local path, or the URI
        self._fs: Any = None
        # Delta: what files() read last, which the next commit is checked against (None: nothing).
        self._planned: _Planned | None = None

    @property
    def fs(self) -> Any:
        """(pyarrow filesystem, the table folder's path in it), built once."""
        if self._fs is None:
            self._fs = filesystem(self.location, self.storage_options)
        return self._fs

    def full_path(self, rel: str) -> str:
        """The filesystem path of the table file ``rel`` (for ``self.fs[0]``)."""
        return f"{self.fs[1].rstrip('/')}/{rel}"

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
        return [self.location.join(p).file_uri() for p in self.files()]

    @storage_errors
    def read_file(
        self, rel: str, columns: Sequence[str] | None = None, schema: pa.Schema | None = None
    ) -> pa.Table:
        return pq.read_table(
            self.full_path(rel),
            columns=list(columns) if columns else None,
            schema=schema,
            filesystem=self.fs[0],
        )

    def add_columns(self, schema: pa.Schema) -> list[str]:
        """Give an existing table the columns of ``schema`` it lacks (nullable, at the end); their
        names. Files written before read them as null. Parquet tables need nothing: each commit
        writes the schema into the manifest and readers pass the schema they expect."""
        return []

    @storage_errors
    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """All live rows as one Arrow table (small tables and tests; Spark reads ``file_uris``)."""
        parts = [self.read_file(p, columns) for p in self.files()]
        if not parts:
            raise TableError(f"table {self.path} has no data files")
        # Files from before a column was added lack it: promotion fills it with nulls.
        return pa.concat_tables(parts, promote_options="default")

    def new_file_path(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex}.zstd.parquet"

    @storage_errors
    def write_file(self, rel: str, rows: pa.Table) -> DataFile:
        """Write ``rows`` as the table file ``rel`` (not live until a commit adds it)."""
        fs, base = self.fs
        fs.create_dir(base, recursive=True)
        pq.write_table(rows, self.full_path(rel), compression="zstd", filesystem=fs)
        info = fs.get_file_info(self.full_path(rel))
        return DataFile(rel, int(info.size), rows.num_rows, int(time.time() * 1000))


def _stat_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def parquet_stats(metadata: Any) -> dict[str, Any]:
    """Delta per-file statistics from a Parquet footer (``pyarrow.parquet.FileMetaData``).

    ``numRecords`` always; ``minValues``/``maxValues`` for every flat column outside
    ``NO_STATS_COLUMNS`` whose every row group with values has min/max; ``nullCount`` where every
    row group counted its nulls. A column that lacks them is left out (readers then read the file),
    never guessed.
    """
    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    schema = metadata.schema.to_arrow_schema()
    for col_index, fld in enumerate(schema):
        if fld.name in NO_STATS_COLUMNS or pa.types.is_nested(fld.type) or pa.types.is_binary(fld.type):
            continue
        lo: Any = None
        hi: Any = None
        n_null = 0
        min_max_ok = null_ok = True
        for rg in range(metadata.num_row_groups):
            chunk = metadata.row_group(rg).column(col_index)
            st = chunk.statistics
            if st is None:
                min_max_ok = null_ok = False
                break
            if st.has_null_count:
                n_null += int(st.null_count)
            else:
                null_ok = False
            if chunk.num_values - (st.null_count if st.has_null_count else 0) <= 0:
                continue  # all null: no min/max to take
            if not st.has_min_max:
                min_max_ok = False
                continue
            lo = st.min if lo is None or st.min < lo else lo
            hi = st.max if hi is None or st.max > hi else hi
        if null_ok:
            nulls[fld.name] = n_null
        if min_max_ok and lo is not None:
            mins[fld.name], maxs[fld.name] = _stat_value(lo), _stat_value(hi)
    return {"numRecords": int(metadata.num_rows), "minValues": mins, "maxValues": maxs, "nullCount": nulls}


class DeltaTableStore(Table):
    """A Delta table written through delta-rs (``deltalake``)."""

    format = "delta"

    @storage_errors
    def exists(self) -> bool:
        # pyarrow, not delta-rs, answers first: it fails fast on a missing bucket, where delta-rs
        # retries for minutes.
        if file_type(self.location.join("_delta_log"), self.storage_options, "table") != "dir":
            return False
        from deltalake import DeltaTable

        return bool(DeltaTable.is_deltatable(self.path, storage_options=self._delta_options()))

    def _delta_options(self) -> dict[str, str] | None:
        return delta_options(self.location, self.storage_options)

    def _dt(self) -> Any:
        from deltalake import DeltaTable

        return DeltaTable(self.path, storage_options=self._delta_options())

    @storage_errors
    def files(self) -> list[str]:
        """The live files; the version read here is the one the next ``commit`` is checked
        against, so a commit planned on it conflicts with whatever changed the table since."""
        if not self.exists():
            self._planned = _Planned(-1, frozenset())
            return []
        dt = self._dt()
        # Paths as written in the log: relative for files this job adds (no partitions).
        paths = [str(p) for p in dt.get_add_actions(flatten=True).column("path").to_pylist()]
        self._planned = _Planned(int(dt.version()), frozenset(paths))
        return paths

    @storage_errors
    def file_uris(self) -> list[str]:
        if not self.exists():
            return []
        return [str(u) for u in self._dt().file_uris()]

    @storage_errors
    def version(self) -> int | None:
        return int(self._dt().version()) if self.exists() else None

    @storage_errors
    def add_columns(self, schema: pa.Schema) -> list[str]:
        # A metadata-only Delta commit (``ALTER TABLE ADD COLUMNS``), once in a table's life: the
        # data commit that follows cannot change the schema (create_write_transaction keeps it).
        from deltalake import Schema

        if not self.exists():
            return []
        dt = self._dt()
        have = set(dt.schema().to_arrow().names)
        missing = [f for f in schema if f.name not in have]
        if missing:
            dt.alter.add_columns(Schema.from_arrow(pa.schema(missing)).fields)
            log.info("table %s: added columns %s", self.path, [f.name for f in missing])
        return [f.name for f in missing]

    @storage_errors
    def _stats(self, f: DataFile) -> str:
        if f.stats is not None:
            return f.stats
        meta = pq.read_metadata(self.full_path(f.path), filesystem=self.fs[0])
        return json.dumps(parquet_stats(meta))

    @storage_errors
    def commit(self, changes: Changes, schema: pa.Schema, metadata: dict[str, str]) -> None:
        from deltalake import CommitProperties, Schema
        from deltalake.exceptions import CommitFailedError
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
                stats=self._stats(f),
            )
            for f in changes.adds
        ]
        # Every attempt is made with delta-rs's own retries off: delta-rs would rebase a failed
        # commit onto the newest version after checking only file-level conflicts, and a concurrent
        # run of the same records adds new files that no such check sees (both runs' rows would
        # land, duplicated). Instead each attempt first checks what committed since the version the
        # plan read (``_check_concurrent``), and a lost race (CommitFailedError: another commit took
        # the version) is checked again on the newer version.
        props = CommitProperties(custom_metadata=dict(metadata), max_commit_retries=0)
        since, self._planned = self._planned, None
        try:
            if not self.exists():
                if changes.removes:
                    raise TableError(f"cannot remove files from {self.path}: the table does not exist yet")
                try:
                    create_table_with_add_actions(
                        self.path,
                        Schema.from_arrow(schema),
                        adds,
                        mode="error",
                        commit_properties=props,
                        storage_options=self._delta_options(),
                    )
                    return
                except Exception as exc:
                    # Another writer created the table in between: commit on top of it (checked
                    # like any concurrent commit) rather than fail half-way through a run.
                    if "already exists" not in str(exc).lower():
                        raise
                since = since or _Planned(-1, frozenset())
            now = int(time.time() * 1000)
            removes = [
                RemoveAction(path=p, data_change=True, deletion_timestamp=now) for p in changes.removes
            ]
            actions: list[Any] = [*adds, *removes]
            for attempt in range(COMMIT_ATTEMPTS):
                base = self._dt()
                if since is not None and base.version() != since.version:
                    self._check_concurrent(since, base, changes, metadata)
                try:
                    base.create_write_transaction(
                        actions, mode="append", schema=schema, commit_properties=props
                    )
                    return
                except CommitFailedError:
                    if attempt == COMMIT_ATTEMPTS - 1 or (since is None and changes.removes):
                        raise
                    time.sleep(0.05 * (attempt + 1))
        except CommitFailedError as exc:
            raise CommitConflictError(
                f"commit to {self.path} conflicts with a concurrent commit and was not made "
                f"({scrub(str(exc), self.storage_options).splitlines()[0]}); the table holds the other "
                "writer's version: run again",
            ) from exc
        except MednerError:
            raise
        except Exception as exc:
            from deltalake.exceptions import DeltaError

            first_line = scrub(str(exc), self.storage_options).strip().splitlines()
            reason = first_line[0] if first_line else type(exc).__name__
            failure = storage_failure(exc, {"table": self.location}, self.storage_options)
            if failure is not None:
                raise failure from exc
            if isinstance(exc, DeltaError):
                raise TableError(f"Delta commit to {self.path} failed ({reason})") from exc
            raise

    def _check_concurrent(
        self, since: _Planned, base: Any, changes: Changes, metadata: dict[str, str]
    ) -> None:
        """Raise ``CommitConflictError`` when a commit made after the version the plan read (``since``)
        conflicts with this one:

        - it removed a file this commit rewrites (the rewritten copy would bring back its rows);
        - it belongs to the same medner run (``medner.run_id`` in its commit metadata): two jobs ran
          one run at once, and both runs' rows would land;
        - (entities and relations, keyed by record) it added rows of a record and model version
          this commit also adds rows for: both runs tagged the same record, and its rows would be
          there twice.
        Anything else (other records, other model versions) commutes with this commit.
        """
        live = set(base.get_add_actions(flatten=True).column("path").to_pylist())
        span = f"version {since.version} -> {base.version()}"
        gone = [p for p in changes.removes if p not in live]
        if gone:
            raise CommitConflictError(
                f"commit to {self.path} conflicts with a concurrent commit ({span}) that removed "
                f"{len(gone)} of the files this one rewrites; this commit was not made and the table "
                "holds the other writer's version: run again"
            )
        run_id = metadata.get(RUN_ID_KEY)
        if run_id is not None:
            newer = int(base.version()) - max(since.version, -1)
            if any(str(c.get(RUN_ID_KEY)) == run_id for c in base.history(limit=newer)):
                raise CommitConflictError(
                    f"commit to {self.path} conflicts with a concurrent commit ({span}) of the same run "
                    f"{run_id!r}: two jobs ran it at once; this commit was not made and the table holds "
                    "the other job's rows of that run: run again"
                )
        if self.location.uri.rstrip("/").rsplit("/", 1)[-1] not in RECORD_KEYED_TABLES:
            return
        theirs = [p for p in live if p not in since.files]
        if not theirs or not changes.adds:
            return
        key = ["record_id", "model_version"]
        ours = _key_pairs(self.read_file(f.path, key) for f in changes.adds)
        both = ours & _key_pairs(self.read_file(p, key) for p in theirs)
        if both:
            raise CommitConflictError(
                f"commit to {self.path} conflicts with a concurrent commit ({span}) that wrote rows of "
                f"{len(both)} of the records this one writes (same model version); this commit was not "
                "made and the table holds the other writer's rows of them: run again"
            )


def _key_pairs(parts: Iterator[pa.Table]) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for part in parts:
        out.update(zip(part["record_id"].to_pylist(), part["model_version"].to_pylist(), strict=True))
    return out


@dataclass(frozen=True)
class _Planned:
    """What ``files()`` read, that a commit is checked against: the version (-1: no table yet)
    and the live files then."""

    version: int
    files: frozenset[str]


class ParquetTableStore(Table):
    """Plain Parquet files plus an atomically replaced manifest of the live ones."""

    format = "parquet"

    def __init__(self, path: str | Path, storage_options: Mapping[str, str] | None = None) -> None:
        super().__init__(path, storage_options)
        if not self.location.is_local:
            raise TableError(
                f"output format 'parquet' needs a local or shared POSIX folder, got {self.path}: its "
                "commit is an atomic rename, which object stores do not have; use output format 'delta'"
            )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the table for one read-modify-replace of the manifest, so that two
        concurrent committers never overwrite each other's manifest (a lost commit)."""
        Path(self.path).mkdir(parents=True, exist_ok=True)
        with open(Path(self.path) / f".{MANIFEST}.lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

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
        with self._locked():
            self._commit_locked(changes, schema, metadata)

    def _commit_locked(self, changes: Changes, schema: pa.Schema, metadata: dict[str, str]) -> None:
        state = self._load()
        live = {str(f["path"]): f for f in state["files"]}
        unknown = [p for p in changes.removes if p not in live]
        if unknown:
            raise CommitConflictError(
                f"cannot remove files not in {self.path}: not live (a concurrent commit removed them?): "
                f"{unknown[:3]}; this commit was not made: run again"
            )
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


def open_table(path: str | Path, fmt: str, storage_options: Mapping[str, str] | None = None) -> Table:
    """A table handle for ``fmt`` (``delta`` or ``parquet``) at ``path`` (a local path or URI)."""
    if fmt == "delta":
        return DeltaTableStore(path, storage_options)
    if fmt == "parquet":
        return ParquetTableStore(path, storage_options)
    raise TableError(f"table format must be one of {FORMATS}, got {fmt!r}")


def detect_format(path: str | Path, storage_options: Mapping[str, str] | None = None) -> str | None:
    """``delta`` / ``parquet`` for an existing medner table at ``path``, None when there is none."""
    loc = location(path, "table")
    if file_type(loc.join("_delta_log"), storage_options, "table") == "dir":
        return "delta"
    if file_type(loc.join(MANIFEST), storage_options, "table") == "file":
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
        keys = table.read_file(rel, columns)
        mask = drop(keys)
        n_drop = int(pc.sum(mask).as_py() or 0)
        if n_drop == 0:
            continue
        changes.removes.append(rel)
        if n_drop == keys.num_rows:
            continue
        rows = table.read_file(rel, schema=schema).filter(pc.invert(mask))
        changes.adds.append(table.write_file(table.new_file_path(prefix), rows))
    return changes

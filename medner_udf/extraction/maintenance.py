"""Keeping the output tables fast to query: compact small files, vacuum removed ones (delta-rs).

Every run adds one file per task to each table, and a re-tag removes (rewrites) files; after a year
of nightly runs a table is thousands of small files plus every removed file still on disk.
``maintain_tables`` runs, per Delta table under the output:

1. ``DeltaTable.optimize.compact`` (bin-packing small files into files of ``target_size``; a
   commit with ``dataChange=false``, so readers and incremental runs see the same rows), then
2. ``DeltaTable.vacuum(full=True)`` of files removed more than ``retention_hours`` ago (by the
   removal's timestamp), and of files no commit ever referenced (a job that died before its
   commit) last modified longer ago than that, then
3. a checkpoint, so readers replay one Parquet checkpoint instead of every JSON commit.

**Retention**: a reader (or a running extraction job: its data files exist before its commit
references them) that started before a file was removed may still read it. Vacuum deletes only
files older than the retention, so the retention must exceed the longest query and the longest
extraction run. Default 168 hours (7 days, Delta's own default); a shorter one is refused unless
``allow_short_retention`` is given explicitly.

A concurrent extraction commit that rewrites a file the compaction just removed fails cleanly
(``tables.CommitConflictError``) and is re-run; no row is lost or duplicated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from medner_udf.errors import MednerUsageError
from medner_udf.extraction.storage import delta_options, file_type, location
from medner_udf.extraction.tables import TableError, detect_format

log = logging.getLogger(__name__)

DEFAULT_RETENTION_HOURS = 168
DEFAULT_TARGET_SIZE = 128 * 1024 * 1024


class MaintenanceError(TableError):
    """An output that holds no table to maintain."""


class RetentionError(MednerUsageError, ValueError):
    """A vacuum retention that could delete files a reader or a running job still needs."""


@dataclass
class TableReport:
    """What maintenance did to one table (counts only)."""

    table: str
    files_before: int
    files_after: int
    version_before: int
    version_after: int
    files_compacted_removed: int = 0
    files_compacted_added: int = 0
    files_vacuumed: int = 0


@dataclass
class MaintenanceReport:
    output: str
    retention_hours: int
    dry_run: bool
    tables: list[TableReport] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_retention(retention_hours: int, allow_short_retention: bool) -> None:
    if retention_hours < 0:
        raise RetentionError(f"retention must be >= 0 hours, got {retention_hours}")
    if retention_hours < DEFAULT_RETENTION_HOURS and not allow_short_retention:
        raise RetentionError(
            f"retention {retention_hours} h is shorter than {DEFAULT_RETENTION_HOURS} h (7 days): vacuum "
            "would delete files that running queries and extraction jobs may still read; pass "
            "--allow-short-retention only when nothing reads or writes the tables meanwhile"
        )


def medner_tables(output: str, storage_options: Mapping[str, str] | None) -> list[str]:
    """URIs of the Delta tables directly under ``output`` (entities, record_status, ...)."""
    from pyarrow import fs as pafs

    from medner_udf.extraction.storage import filesystem

    out = location(output, "output")
    if file_type(out, storage_options, "output") != "dir":
        raise MaintenanceError(f"output {out.uri} is not a folder holding medner tables")
    fs, base = filesystem(out, storage_options)
    names = sorted(
        i.base_name
        for i in fs.get_file_info(pafs.FileSelector(base, recursive=False))
        if i.type == pafs.FileType.Directory
    )
    tables, other = [], []
    for name in names:
        fmt = detect_format(out.join(name).uri, storage_options)
        if fmt == "delta":
            tables.append(out.join(name).uri)
        elif fmt == "parquet":
            other.append(name)
    if other and not tables:
        raise MaintenanceError(
            f"{out.uri} holds tables of output format 'parquet' ({', '.join(other)}); maintain works on "
            "Delta tables only"
        )
    if not tables:
        raise MaintenanceError(f"{out.uri} holds no medner Delta tables; run `medner extract` first")
    return tables


def maintain_tables(
    output: str,
    storage_options: Mapping[str, str] | None = None,
    retention_hours: int = DEFAULT_RETENTION_HOURS,
    allow_short_retention: bool = False,
    target_size: int = DEFAULT_TARGET_SIZE,
    dry_run: bool = False,
    cluster_by_record_id: bool = False,
) -> MaintenanceReport:
    """Compact, vacuum and checkpoint every medner Delta table under ``output``.

    ``cluster_by_record_id`` rewrites with ``optimize.z_order(["record_id"])`` instead of
    ``compact``: the new files hold disjoint record_id ranges, so a query for one record reads one
    file of a large table, at the price of rewriting every file each time (compact rewrites only
    the small ones)."""
    from deltalake import DeltaTable

    check_retention(retention_hours, allow_short_retention)
    started = time.perf_counter()
    report = MaintenanceReport(output=location(output).uri, retention_hours=retention_hours, dry_run=dry_run)
    for uri in medner_tables(output, storage_options):
        opts = delta_options(location(uri), storage_options)
        dt = DeltaTable(uri, storage_options=opts)
        rep = TableReport(
            table=uri,
            files_before=len(dt.file_uris()),
            files_after=0,
            version_before=int(dt.version()),
            version_after=int(dt.version()),
        )
        if not dry_run:
            if cluster_by_record_id:
                metrics = dt.optimize.z_order(["record_id"], target_size=target_size)
            else:
                metrics = dt.optimize.compact(target_size=target_size)
            rep.files_compacted_removed = int(metrics.get("numFilesRemoved", 0))
            rep.files_compacted_added = int(metrics.get("numFilesAdded", 0))
            dt = DeltaTable(uri, storage_options=opts)
        vacuumed = dt.vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=not allow_short_retention,
            full=True,  # also unreferenced files (jobs that died before their commit), by age
        )
        rep.files_vacuumed = len(vacuumed)
        if not dry_run:
            dt = DeltaTable(uri, storage_options=opts)
            dt.create_checkpoint()
        rep.files_after = len(dt.file_uris())
        rep.version_after = int(dt.version())
        log.info("maintained %s: %s", uri, asdict(rep))
        report.tables.append(rep)
    report.seconds = round(time.perf_counter() - started, 3)
    return report

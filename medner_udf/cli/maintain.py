"""``medner maintain``: compact and vacuum the output tables (``medner_udf.extraction.maintenance``)."""

from __future__ import annotations

import json

import click

from medner_udf.cli.extract import storage_option
from medner_udf.cli.reporting import reported
from medner_udf.errors import MednerError
from medner_udf.extraction.maintenance import DEFAULT_RETENTION_HOURS, maintain_tables
from medner_udf.extraction.storage import parse_storage_options, scrub


@click.command("maintain")
@click.option("--output", required=True, help="The extraction output folder or URI (holds the tables).")
@click.option(
    "--retention-hours",
    type=int,
    default=DEFAULT_RETENTION_HOURS,
    show_default=True,
    help="Vacuum only files removed (or never committed) longer ago than this.",
)
@click.option(
    "--allow-short-retention",
    is_flag=True,
    default=False,
    help="Accept a retention under 7 days (only when nothing reads or writes the tables meanwhile).",
)
@click.option("--target-size-mb", type=int, default=128, show_default=True, help="Compacted file size.")
@click.option(
    "--cluster-by-record-id",
    is_flag=True,
    default=False,
    help="Rewrite every file sorted by record_id (z-order) instead of compacting only small ones.",
)
@click.option(
    "--dry-run", is_flag=True, default=False, help="Count what vacuum would delete; change nothing."
)
@storage_option
def maintain(
    output: str,
    retention_hours: int,
    allow_short_retention: bool,
    target_size_mb: int,
    dry_run: bool,
    cluster_by_record_id: bool,
    storage_option_pairs: tuple[str, ...],
) -> None:
    """Compact small files, vacuum removed ones and checkpoint the Delta tables under OUTPUT."""
    options: dict[str, str] = {}
    try:
        options = parse_storage_options(storage_option_pairs)
        if target_size_mb < 1:
            raise click.BadParameter(f"--target-size-mb must be >= 1, got {target_size_mb}")
        report = maintain_tables(
            output,
            options,
            retention_hours=retention_hours,
            allow_short_retention=allow_short_retention,
            target_size=target_size_mb * 1024 * 1024,
            dry_run=dry_run,
            cluster_by_record_id=cluster_by_record_id,
        )
    except MednerError as exc:
        raise reported(exc) from exc
    except OSError as exc:  # a storage failure inside delta-rs: its message without any secret
        raise click.ClickException(f"maintenance of {output} failed: {scrub(str(exc), options)}") from exc
    click.echo(json.dumps(report.as_dict(), indent=2))

"""``medner extract`` and ``medner sql``: click commands over ``medner_udf.extraction.job`` / ``sql``.

The lead attaches them to the ``medner`` group (``main.add_command(extract)``); the spark-submit
entry point ``jobs/extract.py`` runs the same ``extract`` command, so both share flags and checks.
Defaults come from ``conf/extract.toml`` and ``conf/spark.toml`` when they exist; flags win.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import click

from medner_udf.config import conf_file, load_toml
from medner_udf.extraction.job import INPUT_FORMATS, ExtractError, ExtractSettings, run_extract
from medner_udf.extraction.session import build_session, spark_conf
from medner_udf.extraction.tables import FORMATS, TableError
from medner_udf.taggers.artifact import ArtifactError

log = logging.getLogger(__name__)


def _conf_section(path: str | None, section: str) -> dict[str, Any]:
    """``[section]`` of a TOML file, by default the package's ``conf/<section>.toml``."""
    raw = load_toml(path if path is not None else conf_file(f"{section}.toml"))
    if section == "spark":
        return raw
    value = raw.get(section, {})
    if not isinstance(value, dict):
        raise click.BadParameter(f"[{section}] in {path} must be a table")
    return value


def settings_from(conf: dict[str, Any], flags: dict[str, Any]) -> ExtractSettings:
    """Settings from conf defaults overridden by the flags that were given (not None)."""
    known = {f.name for f in dataclasses.fields(ExtractSettings)}
    unknown = sorted(set(conf) - known)
    if unknown:
        raise ExtractError(f"unknown settings in [extract]: {unknown}; known: {sorted(known)}")
    merged = {**conf, **{k: v for k, v in flags.items() if v is not None}}
    missing = [k for k in ("input", "output", "model") if not merged.get(k)]
    if missing:
        raise ExtractError(f"missing required settings: {missing}")
    return ExtractSettings(**merged)


def _spark(spark_conf_path: str | None, master: str | None, app: str) -> Any:
    return build_session(spark_conf(_conf_section(spark_conf_path, "spark")), app_name=app, master=master)


@click.command("extract")
@click.option("--input", "input_", required=True, help="Notes table folder (Parquet or Delta).")
@click.option("--output", required=True, help="Folder for the entities and record_status tables.")
@click.option("--model", required=True, help="Model artifact folder (models/<name>/<version>).")
@click.option("--input-format", type=click.Choice(INPUT_FORMATS), default=None)
@click.option("--output-format", type=click.Choice(FORMATS), default=None)
@click.option("--id-column", default=None, help="Record id column (string or integer).")
@click.option("--text-column", default=None, help="Note text column (string).")
@click.option("--batch-size", type=int, default=None, help="Notes per micro-batch.")
@click.option("--max-batch-chars", type=int, default=None, help="Characters per micro-batch.")
@click.option(
    "--tagger-batch-size", type=int, default=None, help="Segments/windows per forward pass (GPU: 256+)."
)
@click.option("--partitions", type=int, default=None, help="Spark partitions to tag in.")
@click.option("--full/--incremental", default=None, help="Re-tag every record (default: incremental).")
@click.option("--run-id", default=None, help="Explicit run id (Airflow passes one); default derived.")
@click.option("--conf", "conf_path", default=None, help="Extract settings file [default: conf/extract.toml].")
@click.option(
    "--spark-conf", "spark_conf_path", default=None, help="Spark settings file [default: conf/spark.toml]."
)
@click.option("--master", default=None, help="Spark master (spark-submit sets it; default local[*]).")
def extract(
    input_: str,
    output: str,
    model: str,
    input_format: str | None,
    output_format: str | None,
    id_column: str | None,
    text_column: str | None,
    batch_size: int | None,
    max_batch_chars: int | None,
    tagger_batch_size: int | None,
    partitions: int | None,
    full: bool | None,
    run_id: str | None,
    conf_path: str | None,
    spark_conf_path: str | None,
    master: str | None,
) -> None:
    """Tag the notes in INPUT and write entities and record_status tables under OUTPUT."""
    flags = {
        "input": input_,
        "output": output,
        "model": model,
        "input_format": input_format,
        "output_format": output_format,
        "id_column": id_column,
        "text_column": text_column,
        "batch_size": batch_size,
        "max_batch_chars": max_batch_chars,
        "tagger_batch_size": tagger_batch_size,
        "partitions": partitions,
        "full": full,
        "run_id": run_id,
    }
    try:
        settings = settings_from(_conf_section(conf_path, "extract"), flags)
    except (ExtractError, TypeError) as exc:
        raise click.UsageError(str(exc)) from exc
    spark = _spark(spark_conf_path, master, "medner-extract")
    try:
        summary = run_extract(spark, settings)
    except (ExtractError, TableError, ArtifactError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        spark.stop()
    click.echo(json.dumps(summary.as_dict(), indent=2))


@click.command("sql")
@click.argument("query")
@click.option("--output", required=True, help="The extraction output folder (holds the tables).")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print.")
@click.option(
    "--spark-conf", "spark_conf_path", default=None, help="Spark settings file [default: conf/spark.toml]."
)
@click.option("--master", default=None)
def sql(query: str, output: str, limit: int, spark_conf_path: str | None, master: str | None) -> None:
    """Run QUERY with `entities` and `record_status` as tables and print the result."""
    from medner_udf.extraction.sql import run_sql

    if limit < 1:
        raise click.BadParameter(f"--limit must be >= 1, got {limit}")
    spark = _spark(spark_conf_path, master, "medner-sql")
    try:
        df = run_sql(spark, output, query)
        click.echo(df._jdf.showString(limit, 80, False))
    except (TableError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        spark.stop()

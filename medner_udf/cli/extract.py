"""``medner extract`` and ``medner sql``: click commands over ``medner_udf.extraction``.

The spark-submit entry point (``medner_udf/cli/jobs/extract.py``, and ``jobs/extract.py`` in a
checkout) runs the same ``extract`` command, so both share flags and checks. Defaults come from
``conf/extract.toml`` and ``conf/spark.toml`` (the package's copies unless ``--conf`` /
``--spark-conf`` name others); flags win. Settings, paths, formats and the model artifact are
checked before the SparkSession is built: a bad flag costs no JVM start-up.
"""

from __future__ import annotations

import json

import click

from medner_udf.cli.reporting import reported
from medner_udf.errors import MednerError, MednerUsageError
from medner_udf.extraction.job import run_extract
from medner_udf.extraction.session import build_session, load_spark_conf
from medner_udf.extraction.settings import INPUT_FORMATS, check_settings, load_extract_settings
from medner_udf.extraction.storage import parse_storage_options
from medner_udf.extraction.tables import FORMATS

# Repeatable; the same keys as delta-rs's storage options (docs/extraction.md, "Storage").
storage_option = click.option(
    "--storage-option",
    "storage_option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="Storage option for pyarrow and delta-rs (repeatable), e.g. AWS_ENDPOINT_URL=http://...; "
    "secret-looking keys are never printed.",
)


@click.command("extract")
@click.option("--input", "input_", required=True, help="Notes table (Parquet or Delta): a path or URI.")
@click.option(
    "--output", required=True, help="Folder (path or URI) for the entities and record_status tables."
)
@click.option("--model", required=True, help="Model artifact folder (models/<name>/<version>), path or URI.")
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
@click.option(
    "--task-details",
    is_flag=True,
    default=False,
    help="Print each tagging task's rows, seconds and peak worker memory in the summary.",
)
@storage_option
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
    task_details: bool,
    storage_option_pairs: tuple[str, ...],
) -> None:
    """Tag the notes in INPUT and write entities and record_status tables under OUTPUT.

    INPUT, OUTPUT and MODEL are local paths or file://, s3://, gs://, abfs[s]://, hdfs:// URIs."""
    try:
        storage_options = parse_storage_options(storage_option_pairs) or None
    except MednerError as exc:
        raise reported(exc) from exc
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
        "storage_options": storage_options,
    }
    # Expected failures (MednerError) are reported by the caller: the medner group, or run_command
    # in the spark-submit script.
    settings = load_extract_settings(conf_path, flags)
    check_settings(settings)
    spark_settings = load_spark_conf(spark_conf_path)
    spark = build_session(spark_settings, app_name="medner-extract", master=master)
    try:
        summary = run_extract(spark, settings)
    finally:
        spark.stop()
    click.echo(json.dumps(summary.as_dict(task_details), indent=2))


@click.command("sql")
@click.argument("query")
@click.option("--output", required=True, help="The extraction output folder or URI (holds the tables).")
@click.option("--limit", type=int, default=50, show_default=True, help="Rows to print.")
@click.option(
    "--spark-conf", "spark_conf_path", default=None, help="Spark settings file [default: conf/spark.toml]."
)
@click.option("--master", default=None)
@storage_option
def sql(
    query: str,
    output: str,
    limit: int,
    spark_conf_path: str | None,
    master: str | None,
    storage_option_pairs: tuple[str, ...],
) -> None:
    """Run QUERY with `entities`, `relations` and `record_status` as tables and print the result."""
    from pyspark.errors import AnalysisException

    from medner_udf.extraction.sql import run_sql

    if limit < 1:
        raise click.BadParameter(f"--limit must be >= 1, got {limit}")
    if not query.strip():
        raise click.BadParameter("the SQL query is empty", param_hint="QUERY")
    try:
        storage_options = parse_storage_options(storage_option_pairs)
        spark_settings = load_spark_conf(spark_conf_path)
    except MednerError as exc:
        raise reported(exc) from exc
    spark = build_session(spark_settings, app_name="medner-sql", master=master)
    try:
        df = run_sql(spark, output, query, storage_options)
        click.echo(df._jdf.showString(limit, 80, False))
    except AnalysisException as exc:  # parse errors included: the query is the user's
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MednerUsageError(
            f"the SQL query does not run: {first_line}",
            hint="the tables are `entities`, `relations` and `record_status` (columns in docs/extraction.md)",
        ) from exc
    finally:
        spark.stop()

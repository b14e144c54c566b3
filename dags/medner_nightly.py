"""Nightly medner extraction: incremental tagging of the data interval's notes, then a data-quality
gate over the rows that run wrote.

Settings are Airflow Variables, read when a task runs (Jinja templates), never when the scheduler
parses this file; each has a default, and Airflow also reads a Variable from the environment
(``AIRFLOW_VAR_MEDNER_PROJECT=...``), which is how a local run sets them:

- ``medner_project``: the medner checkout (holds ``jobs/extract.py`` and ``conf/``);
- ``medner_python``: the Python of the project's venv (runs the Spark workers and the DQ check);
  default ``<project>/.venv/bin/python``;
- ``medner_notes``: the notes table root; the interval's notes are ``<root>/ingest_date=<ds>``;
- ``medner_output``: where the entities and record_status tables live;
- ``medner_model``: the model artifact folder.

The Spark connection ``spark_default`` says where to submit (``local[2]`` for a laptop). The run id
is ``nightly-<ds_nodash>``, so an Airflow retry or a manual re-run of a day replaces that day's run
instead of adding a second one. docs/extraction.md shows how to run it end to end locally, and
``make dag-test`` does exactly that.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, task


def variable(name: str, default: str) -> str:
    """A Jinja expression for Variable ``name`` (``default`` itself a template expression)."""
    return f"var.value.get('{name}', {default})"


PROJECT_EXPR = variable("medner_project", "'/opt/medner'")
PROJECT = "{{ " + PROJECT_EXPR + " }}"
PYTHON = "{{ " + variable("medner_python", f"{PROJECT_EXPR} ~ '/.venv/bin/python'") + " }}"
NOTES = "{{ " + variable("medner_notes", f"{PROJECT_EXPR} ~ '/warehouse/notes'") + " }}"
OUTPUT = "{{ " + variable("medner_output", f"{PROJECT_EXPR} ~ '/warehouse/medner'") + " }}"
MODEL = "{{ " + variable("medner_model", f"{PROJECT_EXPR} ~ '/models/default'") + " }}"
RUN_ID = "nightly-{{ ds_nodash }}"
INTERVAL_INPUT = NOTES + "/ingest_date={{ ds }}"

with DAG(
    dag_id="medner_nightly",
    description="Tag the day's clinical notes with medner and check the new rows",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs of one model version must commit in order (run_seq)
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
    tags=["medner", "nlp"],
) as dag:
    extract = SparkSubmitOperator(
        task_id="extract_entities",
        application=PROJECT + "/jobs/extract.py",
        name="medner-extract-{{ ds_nodash }}",
        conn_id="spark_default",
        application_args=[
            "--input",
            INTERVAL_INPUT,
            "--output",
            OUTPUT,
            "--model",
            MODEL,
            "--run-id",
            RUN_ID,
            "--incremental",
            "--conf",
            PROJECT + "/conf/extract.toml",
            "--spark-conf",
            PROJECT + "/conf/spark.toml",
        ],
        conf={"spark.python.worker.reuse": "true", "spark.ui.enabled": "false"},
        # MEDNER_QUIET: the job's log is a file here, so no progress lines either.
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "MEDNER_QUIET": "1"},
    )

    # expect_airflow=False: the project venv has no Airflow, and needs none for this check.
    # ``python`` is a templated field, so the Variable is read at run time here too.
    @task.external_python(  # type: ignore[untyped-decorator]
        task_id="data_quality", python=PYTHON, expect_airflow=False
    )
    def data_quality(output: str, medner_run_id: str, model: str, notes: str) -> dict[str, Any]:
        """Fail the DAG run when the run's rows break a table contract (see check_run_quality).

        The input is counted with the job's own reader (Delta through its log, Parquet as Spark
        reads it), so the count is the one the job saw."""
        from medner_udf.extraction.quality import check_run_quality, count_input_rows

        n_input = count_input_rows(notes)
        problems = check_run_quality(output, medner_run_id, model, n_input=n_input)
        if problems:
            raise ValueError("data-quality check failed: " + "; ".join(problems))
        return {"run_id": medner_run_id, "n_input": n_input}

    extract >> data_quality(OUTPUT, RUN_ID, MODEL, INTERVAL_INPUT)

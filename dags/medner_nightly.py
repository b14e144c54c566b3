"""Nightly medner extraction: incremental tagging of the data interval's notes, then a data-quality
gate over the rows that run wrote.

Settings come from Airflow Variables (or the environment, for a local run):

- ``medner_project``: the medner checkout (holds ``jobs/extract.py`` and ``conf/``);
- ``medner_python``: the Python of the project's venv (runs the Spark workers and the DQ check);
- ``medner_notes``: the notes table root; the interval's notes are ``<root>/ingest_date=<ds>``;
- ``medner_output``: where the entities and record_status tables live;
- ``medner_model``: the model artifact folder.

The Spark connection ``spark_default`` says where to submit (``local[2]`` for a laptop). The run id
is ``nightly-<ds_nodash>``, so an Airflow retry or a manual re-run of a day replaces that day's run
instead of adding a second one. docs/extraction.md shows how to run it end to end locally.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Variable, task


def _setting(name: str, default: str) -> str:
    env = os.environ.get(name.upper())
    try:
        return str(Variable.get(name, default=env if env is not None else default))
    except Exception:  # outside a running Airflow (parsing in tests) Variables may be unreachable
        return env if env is not None else default


PROJECT = _setting("medner_project", "/opt/medner")
PYTHON = _setting("medner_python", f"{PROJECT}/.venv/bin/python")
NOTES = _setting("medner_notes", f"{PROJECT}/warehouse/notes")
OUTPUT = _setting("medner_output", f"{PROJECT}/warehouse/medner")
MODEL = _setting("medner_model", f"{PROJECT}/models/default")
RUN_ID = "nightly-{{ ds_nodash }}"
INTERVAL_INPUT = NOTES + "/ingest_date={{ ds }}"

with DAG(
    dag_id="medner_nightly",
    description="Tag the day's clinical notes with medner and check the new rows",
    schedule="@daily",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # runs of one model version must commit in order (run_seq)
    default_args={
        "retries": 1,
        "retry_delay": timedelta(minutes=int(_setting("medner_retry_minutes", "10"))),
    },
    tags=["medner", "nlp"],
) as dag:
    extract = SparkSubmitOperator(
        task_id="extract_entities",
        application=f"{PROJECT}/jobs/extract.py",
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
            f"{PROJECT}/conf/extract.toml",
            "--spark-conf",
            f"{PROJECT}/conf/spark.toml",
        ],
        conf={"spark.python.worker.reuse": "true", "spark.ui.enabled": "false"},
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON},
    )

    # expect_airflow=False: the project venv has no Airflow, and needs none for this check.
    @task.external_python(  # type: ignore[untyped-decorator]
        task_id="data_quality", python=PYTHON, expect_airflow=False
    )
    def data_quality(output: str, medner_run_id: str, model: str, notes: str) -> dict[str, Any]:
        """Fail the DAG run when the run's rows break a table contract (see check_run_quality)."""
        import pyarrow.dataset as ds

        from medner_udf.extraction.quality import check_run_quality

        n_input = ds.dataset(notes, format="parquet").count_rows()
        problems = check_run_quality(output, medner_run_id, model, n_input=n_input)
        if problems:
            raise ValueError("data-quality check failed: " + "; ".join(problems))
        return {"run_id": medner_run_id, "n_input": n_input}

    extract >> data_quality(OUTPUT, RUN_ID, MODEL, INTERVAL_INPUT)

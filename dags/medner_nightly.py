"""Nightly medner extraction: incremental tagging of the data interval's notes, then a data-quality
gate over the rows that run wrote.

Settings are Airflow Variables, read when a task runs (Jinja templates), never when the scheduler
parses this file: ``medner_project``, ``medner_python``, ``medner_notes``, ``medner_output``,
``medner_model`` and ``medner_storage_options`` (dags/medner_templates.py says what each holds).
The Spark connection ``spark_default`` says where to submit (``local[2]`` for a laptop). The run id
is ``nightly-<ds_nodash>``, so an Airflow retry or a manual re-run of a day replaces that day's run
instead of adding a second one. The tables' weekly compaction and vacuum are the DAG
``medner_weekly_maintenance`` (dags/medner_maintenance.py). docs/extraction.md shows how to run it
end to end locally, and ``make dag-test`` does exactly that, on local paths and on S3.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task
from medner_templates import MODEL, NOTES, OUTPUT, PROJECT, PYTHON, STORAGE_OPTIONS, MednerSparkSubmitOperator

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
    extract = MednerSparkSubmitOperator(
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
        storage_options=STORAGE_OPTIONS,
        conf={"spark.python.worker.reuse": "true", "spark.ui.enabled": "false"},
        # MEDNER_QUIET: the job's log is a file here, so no progress lines either.
        env_vars={"PYSPARK_PYTHON": PYTHON, "PYSPARK_DRIVER_PYTHON": PYTHON, "MEDNER_QUIET": "1"},
    )

    # expect_airflow=False: the project venv has no Airflow, and needs none for this check.
    # ``python`` is a templated field, so the Variable is read at run time here too.
    @task.external_python(  # type: ignore[untyped-decorator]
        task_id="data_quality", python=PYTHON, expect_airflow=False
    )
    def data_quality(
        output: str, medner_run_id: str, model: str, notes: str, storage_options: str
    ) -> dict[str, Any]:
        """Fail the DAG run when the run's rows break a table contract (see check_run_quality).

        The input is counted with the job's own reader (Delta through its log, Parquet as Spark
        reads it), so the count is the one the job saw."""
        import json

        from medner_udf.extraction.quality import check_run_quality, count_input_rows

        opts = json.loads(storage_options or "{}")
        n_input = count_input_rows(notes, storage_options=opts)
        problems = check_run_quality(output, medner_run_id, model, n_input=n_input, storage_options=opts)
        if problems:
            raise ValueError("data-quality check failed: " + "; ".join(problems))
        return {"run_id": medner_run_id, "n_input": n_input}

    extract >> data_quality(OUTPUT, RUN_ID, MODEL, INTERVAL_INPUT, STORAGE_OPTIONS)

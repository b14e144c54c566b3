"""Weekly maintenance of medner's output tables: ``maintain_tables`` (what ``medner maintain``
runs): compact the small files that every nightly run adds, vacuum files removed more than the
retention (7 days) ago, checkpoint the Delta log.

Its own DAG with its own ``@weekly`` schedule rather than a task of ``medner_nightly`` that runs
on one weekday: an Airflow schedule is per DAG, and a weekday branch in a daily DAG would show a
skipped task six days out of seven, tie the maintenance's retries and backfills to the
extraction's, and let a failed compaction mark a night's extraction run failed. Same Variables as
the nightly DAG (dags/medner_templates.py), read when the task runs.

It may overlap a nightly run writing the same tables: the two commits then race, and the loser
fails cleanly (docs/extraction.md, "Commits"): a compaction that lost is retried by Airflow, an
extraction that lost is retried the same way, and both are safe to re-run.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import DAG, task
from medner_templates import OUTPUT, PYTHON, STORAGE_OPTIONS

with DAG(
    dag_id="medner_weekly_maintenance",
    description="Compact, vacuum and checkpoint the medner output tables",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=30)},
    tags=["medner", "maintenance"],
) as dag:

    @task.external_python(  # type: ignore[untyped-decorator]
        task_id="maintain_tables", python=PYTHON, expect_airflow=False
    )
    def maintain(output: str, storage_options: str) -> dict[str, Any]:
        """Compact, vacuum and checkpoint every Delta table under ``output``; the counts per table
        (files before and after, files vacuumed) are the task's result."""
        import json

        from medner_udf.extraction.maintenance import maintain_tables

        report = maintain_tables(output, json.loads(storage_options or "{}"))
        return {
            "tables": {
                t.table.rstrip("/").rsplit("/", 1)[-1]: {
                    "files_before": t.files_before,
                    "files_after": t.files_after,
                    "files_vacuumed": t.files_vacuumed,
                    "version_after": t.version_after,
                }
                for t in report.tables
            },
            "seconds": report.seconds,
        }

    maintain(OUTPUT, STORAGE_OPTIONS)

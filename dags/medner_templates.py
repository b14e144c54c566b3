"""Templates and helpers shared by the medner DAGs (``medner_nightly``, ``medner_weekly_maintenance``).

No DAG lives here. Every setting is an Airflow Variable read through a Jinja template when a task
runs, never when the scheduler parses a DAG file; each has a default, and Airflow also reads a
Variable from the environment (``AIRFLOW_VAR_MEDNER_PROJECT=...``), which is how a local run sets
them:

- ``medner_project``: the medner checkout (holds ``jobs/extract.py`` and ``conf/``);
- ``medner_python``: the Python of the project's venv (runs the Spark workers and the Python tasks);
  default ``<project>/.venv/bin/python``;
- ``medner_notes``: the notes table root; the interval's notes are ``<root>/ingest_date=<ds>``;
- ``medner_output``: where the entities, relations and record_status tables live;
- ``medner_model``: the model artifact folder;
- ``medner_storage_options``: a JSON object of storage options (docs/extraction.md, "Storage"),
  ``{}`` by default, e.g. ``{"AWS_ENDPOINT_URL": "http://minio:9000", "AWS_REGION": "eu-west-1"}``.
  Read as JSON, so Airflow masks the values of secret-looking keys (``AWS_SECRET_ACCESS_KEY``) in
  task logs; credentials from the workers' environment or instance role need no entry at all.

Paths of notes, output and model are local paths or URIs (``s3://``, ``gs://``, ``abfss://``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator


def variable(name: str, default: str) -> str:
    """A Jinja expression for Variable ``name`` (``default`` itself a template expression)."""
    return f"var.value.get('{name}', {default})"


PROJECT_EXPR = variable("medner_project", "'/opt/medner'")
PROJECT = "{{ " + PROJECT_EXPR + " }}"
PYTHON = "{{ " + variable("medner_python", f"{PROJECT_EXPR} ~ '/.venv/bin/python'") + " }}"
NOTES = "{{ " + variable("medner_notes", f"{PROJECT_EXPR} ~ '/warehouse/notes'") + " }}"
OUTPUT = "{{ " + variable("medner_output", f"{PROJECT_EXPR} ~ '/warehouse/medner'") + " }}"
MODEL = "{{ " + variable("medner_model", f"{PROJECT_EXPR} ~ '/models/default'") + " }}"
# The options as one JSON text (a task turns it back into a dict).
STORAGE_OPTIONS = "{{ var.json.get('medner_storage_options', {}) | tojson }}"
STORAGE_OPTIONS_VARIABLE = "medner_storage_options"


def storage_options(text: str) -> dict[str, str]:
    """The rendered ``STORAGE_OPTIONS``: a JSON object of string values (an error names the
    Variable and the bad key, never a value: values may be secrets)."""
    try:
        parsed: Any = json.loads(text or "{}")
    except json.JSONDecodeError as exc:
        raise ValueError(f"Variable {STORAGE_OPTIONS_VARIABLE} is not JSON ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"Variable {STORAGE_OPTIONS_VARIABLE} must be a JSON object of KEY: VALUE")
    bad = [k for k, v in parsed.items() if not isinstance(v, str | int | float | bool)]
    if bad:
        raise ValueError(f"Variable {STORAGE_OPTIONS_VARIABLE}: the value of {bad[0]!r} must be a string")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in parsed.items()}


def storage_option_flags(text: str) -> list[str]:
    """``--storage-option KEY=VALUE`` pairs for the rendered ``STORAGE_OPTIONS``."""
    return [x for k, v in sorted(storage_options(text).items()) for x in ("--storage-option", f"{k}={v}")]


class MednerSparkSubmitOperator(SparkSubmitOperator):  # type: ignore[misc]  # Airflow is untyped here
    """``SparkSubmitOperator`` whose ``application_args`` gain a ``--storage-option`` flag per entry
    of the rendered ``storage_options`` JSON when the task runs: a templated list cannot grow by a
    template, and the options are not known when the file is parsed. SparkSubmitHook masks
    secret-looking ``KEY=VALUE`` pairs in the command line it logs, and Airflow masks the values
    it read from the JSON Variable."""

    template_fields: Sequence[str] = (*SparkSubmitOperator.template_fields, "storage_options")

    def __init__(self, *, storage_options: str = "{}", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.storage_options = storage_options

    def execute(self, context: Any) -> None:
        templated: list[str] = list(getattr(self, "application_args", None) or [])
        self.application_args = [*templated, *storage_option_flags(self.storage_options)]
        super().execute(context)

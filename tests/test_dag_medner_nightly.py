"""The nightly DAG: loaded by Airflow (in .venv-airflow), and its wiring checked without Airflow."""

from __future__ import annotations

import ast
import importlib.util
import os
from pathlib import Path

import pytest

DAG_FILE = Path(__file__).resolve().parent.parent / "dags" / "medner_nightly.py"


def test_dag_file_wires_spark_submit_before_the_quality_gate_without_airflow() -> None:
    # Reads the source only, so it runs in the project venv where Airflow is not installed.
    tree = ast.parse(DAG_FILE.read_text(encoding="utf-8"))
    calls = {
        n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
    }
    assert {"SparkSubmitOperator", "DAG"} <= calls
    shifts = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert len(shifts) == 1 and isinstance(shifts[0].left, ast.Name) and shifts[0].left.id == "extract"
    assert "--run-id" in DAG_FILE.read_text() and "--incremental" in DAG_FILE.read_text()


@pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow is not installed here; run this test with .venv-airflow/bin/pytest",
)
def test_airflow_loads_the_dag_with_its_tasks_and_wiring(tmp_path: Path) -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path / "airflow"))
    os.environ["MEDNER_PROJECT"] = "/srv/medner"
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    assert list(bag.dags) == ["medner_nightly"]
    dag = bag.dags["medner_nightly"]  # get_dag() would consult the metadata DB
    assert sorted(dag.task_ids) == ["data_quality", "extract_entities"]
    extract, quality = dag.get_task("extract_entities"), dag.get_task("data_quality")
    assert type(extract).__name__ == "SparkSubmitOperator"
    assert quality.upstream_task_ids == {"extract_entities"}
    assert extract.downstream_task_ids == {"data_quality"}
    args = extract.application_args
    assert args[args.index("--run-id") + 1] == "nightly-{{ ds_nodash }}"
    assert args[args.index("--input") + 1].endswith("/ingest_date={{ ds }}")
    assert extract.application == "/srv/medner/jobs/extract.py"

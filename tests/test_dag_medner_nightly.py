"""The nightly DAG: its wiring checked without Airflow, loaded by Airflow (in .venv-airflow) with
its Variables absent and set, and run end to end by ``airflow dags test`` (``make dag-test``)."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DAG_FILE = ROOT / "dags" / "medner_nightly.py"
needs_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow is not installed here; `make dag-test` runs these with .venv-airflow/bin/pytest",
)
VARIABLES = ("medner_project", "medner_python", "medner_notes", "medner_output", "medner_model")


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


def test_dag_file_reads_no_variable_or_environment_at_parse_time() -> None:
    # Airflow's book: a Variable read at top level costs a metadata-DB call on every parse.
    tree = ast.parse(DAG_FILE.read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "Variable" not in names and "environ" not in attrs and "getenv" not in attrs


@pytest.fixture
def airflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME", str(tmp_path / "airflow")))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    for name in VARIABLES:
        monkeypatch.delenv(f"AIRFLOW_VAR_{name.upper()}", raising=False)
    yield


def _load_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    assert list(bag.dags) == ["medner_nightly"]
    return bag.dags["medner_nightly"]  # get_dag() would consult the metadata DB


def _render(task: Any, value: Any) -> Any:
    """``value`` rendered as the task would render it for 2026-01-02, with Airflow's own Variable
    accessor (it reads ``AIRFLOW_VAR_*`` from the environment before any metadata DB)."""
    from airflow.sdk.execution_time.context import VariableAccessor

    context = {
        "var": {"value": VariableAccessor(deserialize_json=False)},
        "ds": "2026-01-02",
        "ds_nodash": "20260102",
    }
    return task.render_template(value, context)


@needs_airflow
def test_airflow_loads_the_dag_with_variables_absent(
    airflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow.sdk import Variable

    def no_parse_time_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a Variable was read while the DAG file was parsed")

    monkeypatch.setattr(Variable, "get", no_parse_time_reads)
    dag = _load_dag()
    monkeypatch.undo()
    assert sorted(dag.task_ids) == ["data_quality", "extract_entities"]
    extract, quality = dag.get_task("extract_entities"), dag.get_task("data_quality")
    assert type(extract).__name__ == "SparkSubmitOperator"
    assert quality.upstream_task_ids == {"extract_entities"}
    assert extract.downstream_task_ids == {"data_quality"}
    args = _render(extract, extract.application_args)
    assert args[args.index("--run-id") + 1] == "nightly-20260102"
    assert args[args.index("--input") + 1] == "/opt/medner/warehouse/notes/ingest_date=2026-01-02"
    assert args[args.index("--model") + 1] == "/opt/medner/models/default"
    assert _render(extract, extract.application) == "/opt/medner/jobs/extract.py"
    assert _render(quality, quality.python) == "/opt/medner/.venv/bin/python"


@needs_airflow
def test_airflow_renders_the_variables_when_they_are_set(
    airflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_PROJECT", "/srv/medner")
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_NOTES", "/lake/notes")
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_MODEL", "/models/bilstm/7")
    dag = _load_dag()
    extract, quality = dag.get_task("extract_entities"), dag.get_task("data_quality")
    args = _render(extract, extract.application_args)
    assert args[args.index("--input") + 1] == "/lake/notes/ingest_date=2026-01-02"
    assert args[args.index("--model") + 1] == "/models/bilstm/7"
    assert args[args.index("--output") + 1] == "/srv/medner/warehouse/medner"
    assert _render(extract, extract.application) == "/srv/medner/jobs/extract.py"
    assert _render(extract, extract.env_vars)["PYSPARK_PYTHON"] == "/srv/medner/.venv/bin/python"
    assert _render(quality, list(quality.op_args)) == [
        "/srv/medner/warehouse/medner",
        "nightly-20260102",
        "/models/bilstm/7",
        "/lake/notes/ingest_date=2026-01-02",
    ]


# ------------------------------------------------------------------------------ end to end (Airflow)

E2E_DATE = "2026-01-02"
E2E_NOTES = 5  # the first notes of the corpus: a small interval, about 2 minutes on 2 cores
PROJECT_PYTHON = Path(os.environ.get("MEDNER_PYTHON", ROOT / ".venv" / "bin" / "python"))
CORPUS = ROOT.parent / "shared" / "data" / "maccrobat" / "MACCROBAT2020"


def _project(code: str) -> str:
    """Run ``code`` in the project's venv (medner, no Airflow) and return its stdout."""
    done = subprocess.run(
        [str(PROJECT_PYTHON), "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@needs_airflow
@pytest.mark.slow
@pytest.mark.skipif(not PROJECT_PYTHON.is_file(), reason=f"no project venv at {PROJECT_PYTHON}")
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")
def test_airflow_dags_test_runs_extraction_and_quality_gate_end_to_end(tmp_path: Path) -> None:
    """What docs/extraction.md's "Running it end to end" block does: ``airflow dags test`` on a
    5-note interval of the corpus with a gazetteer artifact, then the tables are checked."""
    notes, output, model = tmp_path / "notes", tmp_path / "medner", tmp_path / "models" / "gaz" / "1"
    _project(f"""
        from pathlib import Path
        import pyarrow as pa, pyarrow.parquet as pq
        from medner_udf.corpus.maccrobat import read_corpus
        from medner_udf.taggers.gazetteer import GazetteerTagger
        docs = read_corpus(Path({str(CORPUS)!r}), "all")[:{E2E_NOTES}]
        folder = Path({str(notes)!r}) / "ingest_date={E2E_DATE}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({{"record_id": [d.doc_id for d in docs], "text": [d.text for d in docs]}}),
                       folder / "part-0.parquet")
        terms = [("fever", "Sign_symptom"), ("pain", "Sign_symptom"), ("CT", "Diagnostic_procedure")]
        GazetteerTagger.from_terms(terms, name="gaz", version="1").save(Path({str(model)!r}))
    """)
    airflow_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_MEDNER_PROJECT": str(ROOT),
        "AIRFLOW_VAR_MEDNER_PYTHON": str(PROJECT_PYTHON),
        "AIRFLOW_VAR_MEDNER_NOTES": str(notes),
        "AIRFLOW_VAR_MEDNER_OUTPUT": str(output),
        "AIRFLOW_VAR_MEDNER_MODEL": str(model),
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # spark-submit from the project venv's pyspark
        "PATH": f"{PROJECT_PYTHON.parent}:{airflow_bin}:{os.environ.get('PATH', '')}",
        "JAVA_HOME": os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
    }
    env.pop("PYTHONPATH", None)
    for cmd in (["airflow", "db", "migrate"], ["airflow", "dags", "test", "medner_nightly", E2E_DATE]):
        done = subprocess.run(
            [str(airflow_bin / cmd[0]), *cmd[1:]], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (cmd, done.stdout[-4000:], done.stderr[-4000:])
    log = done.stdout + done.stderr
    assert "state=success" in log or "DagRunState.SUCCESS" in log or "success" in log.lower(), log[-3000:]
    summary = json.loads(
        _project(f"""
        import json
        from collections import Counter
        from medner_udf.extraction.tables import open_table
        status = open_table({str(output / "record_status")!r}, "delta").read()
        ents = open_table({str(output / "entities")!r}, "delta").read()
        print(json.dumps({{"runs": sorted(set(status["run_id"].to_pylist())),
                          "n_status": status.num_rows, "statuses": Counter(status["status"].to_pylist()),
                          "n_entities": ents.num_rows, "labels": sorted(set(ents["label"].to_pylist()))}}))
        """)
        .strip()
        .splitlines()[-1]
    )
    assert summary["runs"] == ["nightly-20260102"]
    assert summary["n_status"] == E2E_NOTES and summary["statuses"] == {"ok": E2E_NOTES}
    assert summary["n_entities"] > 0
    assert set(summary["labels"]) <= {"Sign_symptom", "Diagnostic_procedure"}

"""The medner DAGs (dags/): their wiring checked without Airflow, loaded by Airflow (in
.venv-airflow) with their Variables absent and set, and run end to end by ``airflow dags test``
(``make dag-test``): the nightly DAG on local paths, then both DAGs on S3 (a moto server)."""

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
DAGS = ROOT / "dags"
DAG_FILE = DAGS / "medner_nightly.py"
MAINTENANCE_FILE = DAGS / "medner_maintenance.py"
TEMPLATES_FILE = DAGS / "medner_templates.py"
needs_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow is not installed here; `make dag-test` runs these with .venv-airflow/bin/pytest",
)
VARIABLES = (
    "medner_project",
    "medner_python",
    "medner_notes",
    "medner_output",
    "medner_model",
    "medner_storage_options",
)


def test_dag_file_wires_spark_submit_before_the_quality_gate_without_airflow() -> None:
    # Reads the source only, so it runs in the project venv where Airflow is not installed.
    tree = ast.parse(DAG_FILE.read_text(encoding="utf-8"))
    calls = {
        n.func.id if isinstance(n.func, ast.Name) else getattr(n.func, "attr", "")
        for n in ast.walk(tree)
        if isinstance(n, ast.Call)
    }
    assert {"MednerSparkSubmitOperator", "DAG"} <= calls
    shifts = [n for n in ast.walk(tree) if isinstance(n, ast.BinOp) and isinstance(n.op, ast.RShift)]
    assert len(shifts) == 1 and isinstance(shifts[0].left, ast.Name) and shifts[0].left.id == "extract"
    assert "--run-id" in DAG_FILE.read_text() and "--incremental" in DAG_FILE.read_text()
    assert "SparkSubmitOperator" in TEMPLATES_FILE.read_text()


@pytest.mark.parametrize("path", [DAG_FILE, MAINTENANCE_FILE, TEMPLATES_FILE], ids=lambda p: p.name)
def test_dag_files_read_no_variable_or_environment_at_parse_time(path: Path) -> None:
    # Airflow's book: a Variable read at top level costs a metadata-DB call on every parse.
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    attrs = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert "Variable" not in names and "environ" not in attrs and "getenv" not in attrs


@pytest.fixture
def airflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AIRFLOW_HOME", os.environ.get("AIRFLOW_HOME", str(tmp_path / "airflow")))
    monkeypatch.setenv("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(DAGS))
    monkeypatch.syspath_prepend(str(DAGS))  # Airflow puts the DAGs folder on sys.path too
    for name in VARIABLES:
        monkeypatch.delenv(f"AIRFLOW_VAR_{name.upper()}", raising=False)
    yield


def _load_dag(dag_id: str = "medner_nightly") -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert sorted(bag.dags) == ["medner_nightly", "medner_weekly_maintenance"]
    return bag.dags[dag_id]  # get_dag() would consult the metadata DB


def _render(task: Any, value: Any) -> Any:
    """``value`` rendered as the task would render it for 2026-01-02, with Airflow's own Variable
    accessor (it reads ``AIRFLOW_VAR_*`` from the environment before any metadata DB)."""
    from airflow.sdk.execution_time.context import VariableAccessor

    context = {
        "var": {
            "value": VariableAccessor(deserialize_json=False),
            "json": VariableAccessor(deserialize_json=True),
        },
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
    weekly = _load_dag("medner_weekly_maintenance")
    monkeypatch.undo()
    assert sorted(dag.task_ids) == ["data_quality", "extract_entities"]
    extract, quality = dag.get_task("extract_entities"), dag.get_task("data_quality")
    assert type(extract).__name__ == "MednerSparkSubmitOperator"
    assert _render(extract, extract.storage_options) == "{}"
    assert weekly.task_ids == ["maintain_tables"]
    maintain = weekly.get_task("maintain_tables")
    assert _render(maintain, list(maintain.op_args)) == ["/opt/medner/warehouse/medner", "{}"]
    assert _render(maintain, maintain.python) == "/opt/medner/.venv/bin/python"
    assert weekly.schedule == "@weekly" and dag.schedule == "@daily"
    assert dag.max_active_runs == weekly.max_active_runs == 1
    assert quality.upstream_task_ids == {"extract_entities"}
    assert extract.downstream_task_ids == {"data_quality"}
    args = _render(extract, extract.application_args)
    assert args[args.index("--run-id") + 1] == "nightly-20260102"
    assert args[args.index("--input") + 1] == "/opt/medner/warehouse/notes/ingest_date=2026-01-02"
    assert args[args.index("--model") + 1] == "/opt/medner/models/default"
    assert _render(extract, extract.application) == "/opt/medner/jobs/extract.py"
    assert _render(quality, quality.python) == "/opt/medner/.venv/bin/python"


OPTIONS = {"AWS_SECRET_ACCESS_KEY": "not-a-real-secret", "AWS_REGION": "eu-west-1"}


@needs_airflow
def test_airflow_renders_the_variables_when_they_are_set(
    airflow_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_PROJECT", "/srv/medner")
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_NOTES", "/lake/notes")
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_MODEL", "/models/bilstm/7")
    monkeypatch.setenv("AIRFLOW_VAR_MEDNER_STORAGE_OPTIONS", json.dumps(OPTIONS))
    dag = _load_dag()
    extract, quality = dag.get_task("extract_entities"), dag.get_task("data_quality")
    args = _render(extract, extract.application_args)
    assert args[args.index("--input") + 1] == "/lake/notes/ingest_date=2026-01-02"
    assert args[args.index("--model") + 1] == "/models/bilstm/7"
    assert args[args.index("--output") + 1] == "/srv/medner/warehouse/medner"
    assert _render(extract, extract.application) == "/srv/medner/jobs/extract.py"
    assert _render(extract, extract.env_vars)["PYSPARK_PYTHON"] == "/srv/medner/.venv/bin/python"
    rendered_options = _render(extract, extract.storage_options)
    assert json.loads(rendered_options) == OPTIONS
    assert _render(quality, list(quality.op_args)) == [
        "/srv/medner/warehouse/medner",
        "nightly-20260102",
        "/models/bilstm/7",
        "/lake/notes/ingest_date=2026-01-02",
        rendered_options,
    ]
    weekly = _load_dag("medner_weekly_maintenance").get_task("maintain_tables")
    assert _render(weekly, list(weekly.op_args)) == ["/srv/medner/warehouse/medner", rendered_options]

    # When the task runs, the options become --storage-option flags after the templated arguments.
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    submitted: list[list[str]] = []
    monkeypatch.setattr(
        SparkSubmitOperator, "execute", lambda self, ctx: submitted.append(self.application_args)
    )
    extract.application_args, extract.storage_options = args, rendered_options
    extract.execute({})
    assert submitted[0][: len(args)] == args
    assert submitted[0][len(args) :] == [
        "--storage-option",
        "AWS_REGION=eu-west-1",
        "--storage-option",
        "AWS_SECRET_ACCESS_KEY=not-a-real-secret",
    ]


def test_spark_submit_hook_masks_the_secret_option_in_the_command_it_logs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("airflow")
    monkeypatch.syspath_prepend(str(DAGS))
    from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
    from medner_templates import storage_option_flags

    flags = storage_option_flags(json.dumps({**OPTIONS, "AWS_ENDPOINT_URL": "http://s3.local:9000"}))
    shown = SparkSubmitHook()._mask_cmd(["spark-submit", "jobs/extract.py", *flags])
    assert "not-a-real-secret" not in shown and "AWS_SECRET_ACCESS_KEY=" in shown
    assert "AWS_ENDPOINT_URL=http://s3.local:9000" in shown


def test_storage_options_variable_must_be_a_json_object_and_errors_show_no_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("airflow")
    monkeypatch.syspath_prepend(str(DAGS))
    from medner_templates import storage_option_flags

    assert storage_option_flags("{}") == [] and storage_option_flags("") == []
    assert storage_option_flags('{"AWS_ALLOW_HTTP": true}') == ["--storage-option", "AWS_ALLOW_HTTP=true"]
    for bad, says in (
        ("[1]", "JSON object"),
        ("{not json", "is not JSON"),
        ('{"K": {"v": "s3cr3t"}}', "'K'"),
    ):
        with pytest.raises(ValueError, match=says) as caught:
            storage_option_flags(bad)
        assert "s3cr3t" not in str(caught.value)


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


def _airflow_env(
    tmp_path: Path, notes: str, output: str, model: str, storage_options: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of docs/extraction.md's "Running it end to end" block."""
    airflow_bin = Path(sys.executable).parent
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_VAR_MEDNER_PROJECT": str(ROOT),
        "AIRFLOW_VAR_MEDNER_PYTHON": str(PROJECT_PYTHON),
        "AIRFLOW_VAR_MEDNER_NOTES": notes,
        "AIRFLOW_VAR_MEDNER_OUTPUT": output,
        "AIRFLOW_VAR_MEDNER_MODEL": model,
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": "local[2]"}),
        # spark-submit from the project venv's pyspark
        "PATH": f"{PROJECT_PYTHON.parent}:{airflow_bin}:{os.environ.get('PATH', '')}",
        "JAVA_HOME": os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
    }
    if storage_options is not None:
        env["AIRFLOW_VAR_MEDNER_STORAGE_OPTIONS"] = json.dumps(storage_options)
    env.pop("PYTHONPATH", None)
    return env


def _airflow(env: dict[str, str], *args: str) -> str:
    """Run the ``airflow`` command; its output (``dags test`` prints the task logs there)."""
    done = subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, (args, done.stdout[-4000:], done.stderr[-4000:])
    if args[:2] == ("dags", "test"):
        assert "state=success" in log or "DagRunState.SUCCESS" in log or "success" in log.lower(), log[-3000:]
        assert "state=failed" not in log and "DagRunState.FAILED" not in log, log[-4000:]
    return log


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
    env = _airflow_env(tmp_path, notes=str(notes), output=str(output), model=str(model))
    _airflow(env, "db", "migrate")
    _airflow(env, "dags", "test", "medner_nightly", E2E_DATE)
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
    _check_summary(summary)


def _check_summary(summary: dict[str, Any]) -> None:
    assert summary["runs"] == ["nightly-20260102"]
    assert summary["n_status"] == E2E_NOTES and summary["statuses"] == {"ok": E2E_NOTES}
    assert summary["n_entities"] > 0
    assert set(summary["labels"]) <= {"Sign_symptom", "Diagnostic_procedure"}


@needs_airflow
@pytest.mark.slow
@pytest.mark.skipif(not PROJECT_PYTHON.is_file(), reason=f"no project venv at {PROJECT_PYTHON}")
@pytest.mark.skipif(not CORPUS.is_dir(), reason=f"no corpus at {CORPUS}")
def test_airflow_runs_the_nightly_and_weekly_dags_on_s3_without_a_secret_in_the_logs(tmp_path: Path) -> None:
    """Notes, model and tables in a bucket of the moto S3 server (tests/s3_server.py, run by the
    project's Python, which has moto); the Variables hold s3:// URIs and the storage options
    (endpoint and keys). ``airflow dags test`` runs the nightly DAG, then the weekly maintenance;
    the tables are read back from S3, and the secret key appears in no output or task log."""
    sys.path.insert(0, str(ROOT / "tests"))
    from s3_server import S3Server

    server = S3Server(tmp_path / "requests.log", python=str(PROJECT_PYTHON))
    try:
        opts = server.options
        bucket = server.make_bucket("dag")
        notes, output, model = f"s3://{bucket}/notes", f"s3://{bucket}/medner", f"s3://{bucket}/models/gaz/1"
        _project(f"""
            from pathlib import Path
            import tempfile
            import pyarrow as pa, pyarrow.parquet as pq
            from medner_udf.corpus.maccrobat import read_corpus
            from medner_udf.extraction.storage import filesystem, location
            from medner_udf.taggers.gazetteer import GazetteerTagger
            fs, root = filesystem(location({f"s3://{bucket}"!r}), {opts!r})
            docs = read_corpus(Path({str(CORPUS)!r}), "all")[:{E2E_NOTES}]
            pq.write_table(pa.table({{"record_id": [d.doc_id for d in docs], "text": [d.text for d in docs]}}),
                           f"{{root}}/notes/ingest_date={E2E_DATE}/part-0.parquet", filesystem=fs)
            terms = [("fever", "Sign_symptom"), ("pain", "Sign_symptom"), ("CT", "Diagnostic_procedure")]
            local = Path(tempfile.mkdtemp()) / "gaz"
            GazetteerTagger.from_terms(terms, name="gaz", version="1").save(local)
            for f in local.rglob("*"):
                if f.is_file():
                    with fs.open_output_stream(f"{{root}}/models/gaz/1/{{f.relative_to(local)}}") as out:
                        out.write(f.read_bytes())
        """)
        env = _airflow_env(tmp_path, notes=notes, output=output, model=model, storage_options=opts)
        logs = _airflow(env, "db", "migrate")
        logs += _airflow(env, "dags", "test", "medner_nightly", E2E_DATE)
        logs += _airflow(env, "dags", "test", "medner_weekly_maintenance", "2026-01-04")
        summary = json.loads(
            _project(f"""
            import json
            from collections import Counter
            from medner_udf.extraction.storage import list_files, location
            from medner_udf.extraction.tables import open_table
            opts = {opts!r}
            status = open_table({output + "/record_status"!r}, "delta", opts).read()
            ents = open_table({output + "/entities"!r}, "delta", opts).read()
            log = list_files(location({output + "/entities/_delta_log"!r}), opts)
            print(json.dumps({{"runs": sorted(set(status["run_id"].to_pylist())),
                              "n_status": status.num_rows, "statuses": Counter(status["status"].to_pylist()),
                              "n_entities": ents.num_rows, "labels": sorted(set(ents["label"].to_pylist())),
                              "checkpoints": [p for p, _ in log if p.endswith(".checkpoint.parquet")]}}))
            """)
            .strip()
            .splitlines()[-1]
        )
        _check_summary(summary)
        assert summary["checkpoints"], "the weekly maintenance wrote no checkpoint"
        # The tasks did reach the server (their requests are in its log), and no secret got out.
        assert any(f"/{bucket}/medner/entities/" in r for r in server.requests())
        # The extraction task's spark-submit command line is in the output, with the options as
        # flags and the secret masked by SparkSubmitHook and Airflow's masker.
        assert f"--storage-option AWS_ENDPOINT_URL={server.endpoint}" in logs, logs[-4000:]
        (tmp_path / "dags-test-output.log").write_text(logs, encoding="utf-8")  # kept for a look
        task_logs = [p for p in (tmp_path / "airflow").rglob("*.log") if p.is_file()]
        for text in [logs, *(p.read_text(encoding="utf-8", errors="replace") for p in task_logs)]:
            assert server.secret_key not in text
    finally:
        server.stop()

"""Expected failures at the CLI boundary: one or two lines (what, the value, what to do), exit code
2 for usage errors and 1 for run-time failures, a traceback only for bugs or with --debug."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from medner_udf.cli.main import main
from medner_udf.extraction.schemas import STATUS_SCHEMA
from medner_udf.extraction.tables import Changes, DataFile, DeltaTableStore
from medner_udf.taggers.gazetteer import GazetteerTagger

JOBS = Path(__file__).resolve().parent.parent / "jobs"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_reported(result: Result, exit_code: int, *lines: str) -> None:
    """The failure came out as ``Error: <lines[0]>`` (+ ``hint: <lines[1]>``) and nothing else."""
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    err = result.stderr.strip().splitlines()
    assert len(err) == len(lines), err
    assert err[0].startswith("Error: ") and lines[0] in err[0], err
    for want, got in zip(lines[1:], err[1:], strict=True):
        assert got.startswith("hint: ") and want in got, err


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    folder = tmp_path / "notes"
    folder.mkdir()
    pq.write_table(pa.table({"record_id": ["a"], "text": ["fever"]}), folder / "p.parquet")
    return folder


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return GazetteerTagger.from_terms([("fever", "Sign_symptom")]).save(tmp_path / "model")


def test_cli_missing_corpus_is_one_line_with_where_to_put_it(tmp_path: Path) -> None:
    result = run("corpus-stats", "--corpus", str(tmp_path / "nope"))
    assert_reported(
        result, 2, f"corpus folder {tmp_path / 'nope'} does not exist", "put MACCROBAT2020 at ../shared/data"
    )


def test_cli_demo_without_corpus_fails_before_training(tmp_path: Path) -> None:
    result = run("demo", "--corpus", str(tmp_path / "nope"), "--models-dir", str(tmp_path / "models"))
    assert_reported(result, 2, "corpus folder", "MEDNER_CORPUS")
    assert not (tmp_path / "models").exists()


def test_cli_not_an_artifact_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run("evaluate", "--model", str(tmp_path / "empty"), "--corpus", str(tmp_path))
    assert_reported(result, 2, f"artifact file artifact.json is missing in {tmp_path / 'empty'}")


def test_cli_bad_setting_names_the_value(tmp_path: Path) -> None:
    result = run("train", "--set", "optim.epochs=many", "--corpus", str(tmp_path))
    assert_reported(result, 2, "setting optim.epochs: expected int, got 'many'")


def test_cli_bad_uri_is_a_usage_error(notes: Path, model: Path, tmp_path: Path) -> None:
    result = run("extract", "--input", "foo://bucket/notes", "--output", str(tmp_path), "--model", str(model))
    assert_reported(
        result, 2, "input 'foo://bucket/notes' has the unknown URI scheme 'foo'; expected a local"
    )


def test_cli_java_home_without_java_is_reported_before_spark(
    notes: Path, model: Path, tmp_path: Path
) -> None:
    result = run(
        "extract", "--input", str(notes), "--output", str(tmp_path / "out"), "--model", str(model),
        env={"JAVA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert_reported(result, 2, f"JAVA_HOME={tmp_path} holds no bin/java", "set JAVA_HOME to a Java 17 JDK")


def test_cli_storage_refused_is_a_runtime_failure(
    notes: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may run as root, for whom every folder is writable: the refusal is simulated.
    monkeypatch.setattr("medner_udf.extraction.settings.os.access", lambda *a, **k: False)
    result = run("extract", "--input", str(notes), "--output", str(tmp_path / "out"), "--model", str(model))
    assert_reported(result, 1, f"output {tmp_path / 'out'} cannot be written", "grant write permission")


def test_cli_os_permission_error_is_reported_not_a_bug(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", "/data/MACCROBAT2020/1.txt")

    monkeypatch.setattr("medner_udf.corpus.maccrobat.read_corpus", refuse)
    result = run("corpus-stats", "--corpus", str(tmp_path))
    assert_reported(result, 1, "Permission denied: /data/MACCROBAT2020/1.txt", "permissions")


def _delta_conflict(output: Path) -> None:
    """Two jobs commit the same run to one Delta table at once: both planned on the same version,
    and the second one's commit finds the first one's commit of that run."""
    data = output / "record_status"
    data.mkdir(parents=True)
    rows = pa.Table.from_pylist([], schema=STATUS_SCHEMA)

    def add(name: str) -> Changes:
        pq.write_table(rows, data / name)
        return Changes(adds=[DataFile(name, (data / name).stat().st_size, 0, 1)])

    DeltaTableStore(data).commit(add("seed.parquet"), STATUS_SCHEMA, {})
    first, second = DeltaTableStore(data), DeltaTableStore(data)
    first.files(), second.files()  # both plan on version 0
    first.commit(add("a.parquet"), STATUS_SCHEMA, {"medner.run_id": "r1"})
    second.commit(add("b.parquet"), STATUS_SCHEMA, {"medner.run_id": "r1"})


def test_cli_delta_commit_conflict_is_one_line_and_says_rerun(
    notes: Path, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class NoSpark:
        def stop(self) -> None: ...

    monkeypatch.setattr("medner_udf.cli.extract.build_session", lambda *a, **k: NoSpark())
    monkeypatch.setattr(
        "medner_udf.cli.extract.run_extract", lambda spark, s: _delta_conflict(Path(s.output))
    )
    out = tmp_path / "out"
    result = run("extract", "--input", str(notes), "--output", str(out), "--model", str(model))
    assert_reported(
        result,
        1,
        f"commit to {out / 'record_status'} conflicts with a concurrent commit (version 0 -> 1) of the "
        "same run 'r1'",
        "re-running this job is safe",
    )


def test_cli_debug_adds_the_traceback_of_an_expected_failure(tmp_path: Path) -> None:
    for args, env in (
        (["--debug", "corpus-stats", "--corpus", str(tmp_path / "nope")], None),
        (["corpus-stats", "--corpus", str(tmp_path / "nope")], {"MEDNER_DEBUG": "1"}),
    ):
        result = run(*args, env=env)
        assert result.exit_code == 2
        assert "Traceback" in result.stderr and "CorpusNotFoundError" in result.stderr
        assert result.stderr.strip().splitlines()[-2].startswith("Error: corpus folder")


def test_cli_a_bug_keeps_its_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr("medner_udf.corpus.maccrobat.read_corpus", broken)
    result = run("corpus-stats", "--corpus", str(tmp_path))
    assert result.exit_code == 1
    assert isinstance(result.exception, KeyError)  # not swallowed: click's runner holds it, Python prints it


def test_spark_submit_script_reports_expected_failures_in_one_style(tmp_path: Path, capsys: Any) -> None:
    from medner_udf.cli.jobs.extract import main as job_main

    status = job_main(
        ["--input", str(tmp_path / "nope"), "--output", str(tmp_path), "--model", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip().splitlines() == [f"Error: input folder {tmp_path / 'nope'} does not exist"]


def test_train_job_script_reports_expected_failures_in_one_style(tmp_path: Path, capsys: Any) -> None:
    spec = importlib.util.spec_from_file_location("medner_train_job", JOBS / "train.py")
    assert spec is not None and spec.loader is not None
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)

    status = job.main(["--corpus", str(tmp_path / "nope"), "--set", "run.output_dir=" + str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert err[0] == f"Error: corpus folder {tmp_path / 'nope'} does not exist"
    assert err[1].startswith("hint: ") and len(err) == 2


@pytest.mark.slow
def test_demo_reports_a_failure_of_its_spark_submit_child_in_one_line_each(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """The child (the packaged job script) prints its error; the parent adds one line, no traceback,
    and passes the child's usage exit status on."""
    (tmp_path / "not-a-model").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "MEDNER_DEBUG"}
    env.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    cmd = [sys.executable, "-m", "medner_udf.cli", "demo", "--corpus", str(tiny_corpus),
           "--model", str(tmp_path / "not-a-model"), "--out", str(tmp_path / "demo")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
    # bytes, decoded without newline translation: a bar's carriage return would show
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 2, output[-3000:]
    assert errors == [
        f"Error: artifact file artifact.json is missing in {tmp_path / 'not-a-model'}",
        "Error: the extraction job (spark-submit) failed with exit status 2; its error is above",
    ], output[-3000:]
    assert "Traceback" not in output and "\r" not in output


@pytest.mark.slow
@pytest.mark.spark
def test_cli_input_schema_mismatch_is_one_line_after_spark_starts(model: Path, tmp_path: Path) -> None:
    notes = tmp_path / "bad-notes"
    notes.mkdir()
    pq.write_table(pa.table({"record_id": ["a"], "body": ["fever"]}), notes / "p.parquet")
    env = {k: v for k, v in os.environ.items() if k != "MEDNER_DEBUG"}
    env.setdefault("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    cmd = [sys.executable, "-m", "medner_udf.cli", "extract", "--input", str(notes),
           "--output", str(tmp_path / "out"), "--model", str(model), "--master", "local[1]"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, env=env, timeout=600, check=False)
    output = (done.stdout + done.stderr).decode("utf-8", "replace")
    errors = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert done.returncode == 2, output[-3000:]
    assert errors == ["Error: input has no text column 'text'; its columns are ['body', 'record_id']"]
    assert "Traceback" not in output

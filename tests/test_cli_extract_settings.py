"""``medner extract`` checks its settings before it starts Spark: a bad flag costs no JVM start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from medner_udf.cli.main import main
from medner_udf.taggers.gazetteer import GazetteerTagger


@pytest.fixture
def job_args(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "notes").mkdir()
    pq.write_table(pa.table({"record_id": ["a"], "text": ["fever"]}), tmp_path / "notes" / "p.parquet")
    model = GazetteerTagger.from_terms([("fever", "Sign_symptom")]).save(tmp_path / "model")
    return {"--input": str(tmp_path / "notes"), "--output": str(tmp_path / "out"), "--model": str(model)}


def invoke(args: dict[str, str], *extra: str) -> Any:
    argv = ["extract", *(x for kv in args.items() for x in kv), *extra]
    return CliRunner().invoke(main, argv)


@pytest.mark.parametrize(
    ("change", "extra", "message"),
    [
        ({"--model": "MISSING"}, (), "model artifact {tmp}/nope does not exist"),
        ({"--input": "MISSING"}, (), "input folder {tmp}/nope does not exist"),
        ({}, ("--batch-size", "0"), "batch_size must be >= 1, got 0"),
        ({}, ("--run-id", "../x"), "run id '../x' must be"),
        ({}, ("--conf", "BADCONF"), "unknown setting(s) ['batchsize']"),
        ({}, ("--spark-conf", "MISSING"), "settings file {tmp}/nope does not exist"),
    ],
)
def test_extract_bad_settings_fail_before_spark_starts(
    tmp_path: Path,
    job_args: dict[str, str],
    no_spark: list[Any],
    change: dict[str, str],
    extra: tuple[str, ...],
    message: str,
) -> None:
    (tmp_path / "bad.toml").write_text("[extract]\nbatchsize = 8\n")
    subst = {"MISSING": str(tmp_path / "nope"), "BADCONF": str(tmp_path / "bad.toml")}
    args = {k: subst.get(v, v) for k, v in {**job_args, **change}.items()}
    result = invoke(args, *(subst.get(x, x) for x in extra))
    assert no_spark == []
    assert result.exit_code == 2, result.output
    assert message.format(tmp=tmp_path) in result.output
    assert not (tmp_path / "out").exists()


def test_extract_good_settings_reach_the_session_builder(
    job_args: dict[str, str], no_spark: list[Any]
) -> None:
    # The counterpart: with nothing wrong, the command gets as far as building the session.
    result = invoke(job_args, "--master", "local[1]")
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "build_session called"
    assert len(no_spark) == 1 and no_spark[0][1]["master"] == "local[1]"


def test_spark_submit_entry_point_checks_settings_before_spark_too(
    tmp_path: Path, job_args: dict[str, str], no_spark: list[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from medner_udf.cli.jobs.extract import main as job_main

    args = {**job_args, "--model": str(tmp_path / "nope")}
    assert job_main([x for kv in args.items() for x in kv]) == 2
    assert no_spark == []
    assert f"model artifact {tmp_path}/nope does not exist" in capsys.readouterr().err

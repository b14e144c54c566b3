"""``medner extract``/``sql``/``maintain`` with URIs and ``--storage-option``: bad values fail before
any SparkSession is built, with exit code 2, naming the value and never printing a secret; and
``medner sql`` in its own process answers over tables in a real S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pytest
from click.testing import CliRunner

from medner_udf.cli.main import main
from medner_udf.extraction.schemas import ENTITIES_SCHEMA
from medner_udf.extraction.tables import Changes, open_table

if TYPE_CHECKING:
    from s3_server import S3Server


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "ftp://host/notes"], "unknown URI scheme 'ftp'"),
        (["--storage-option", "AWS_SECRET_ACCESS_KEY"], "storage option number 1 must be KEY=VALUE"),
        (["--output-format", "parquet", "--output", "s3://bkt/out"], "output format 'parquet' needs a local"),
    ],
)
def test_extract_refuses_bad_storage_flags_before_spark(
    tmp_path: Path, no_spark: list[Any], args: list[str], message: str
) -> None:
    base = {
        "--input": str(tmp_path / "notes"),
        "--output": str(tmp_path / "out"),
        "--model": str(tmp_path / "m"),
    }
    (tmp_path / "notes").mkdir()
    flags = dict(base)
    rest = list(args)
    while rest and rest[0] in base:
        key = rest.pop(0)
        flags[key] = rest.pop(0)
    argv = ["extract", *[x for kv in flags.items() for x in kv], *rest]
    result = CliRunner().invoke(main, [*argv, "--storage-option", "AWS_SECRET_ACCESS_KEY=hunter2-secret"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "hunter2-secret" not in result.output
    assert no_spark == []


@pytest.mark.slow  # one JVM start
@pytest.mark.spark
def test_medner_sql_answers_over_s3_tables_in_its_own_process(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.make_bucket("sqlcli")
    table = open_table(f"s3://{bucket}/out/entities", "delta", s3_server.options)
    rows = pa.table(
        {
            "record_id": ["a", "a", "b"],
            "begin": [0, 10, 3],
            "end": [5, 14, 8],
            "text": ["fever", "mass", "cough"],
            "label": ["Sign_symptom", "Sign_symptom", "Sign_symptom"],
            "score": [0.9, 0.8, 0.7],
            "note_hash": ["h", "h", "g"],
            "model_name": ["m"] * 3,
            "model_version": ["1"] * 3,
            "run_id": ["r1"] * 3,
            "assertion": ["present", "absent", None],
            "assertion_score": [0.95, 0.9, None],
        }
    ).select(ENTITIES_SCHEMA.names)
    table.commit(
        Changes(adds=[table.write_file("part-0.parquet", rows.cast(ENTITIES_SCHEMA))]), ENTITIES_SCHEMA, {}
    )
    options = [x for k, v in s3_server.options.items() for x in ("--storage-option", f"{k}={v}")]
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "medner_udf.cli",
            "sql",
            "--output",
            f"s3://{bucket}/out",
            "--master",
            "local[1]",
            *options,
            "SELECT record_id, count(*) AS n FROM entities GROUP BY record_id ORDER BY record_id",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [line.replace(" ", "") for line in out.stdout.splitlines()]
    assert "|a|2|" in lines and "|b|1|" in lines
    assert s3_server.secret_key not in out.stdout + out.stderr

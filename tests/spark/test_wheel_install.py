"""The built wheel works outside a checkout: ``pip wheel .`` -> a fresh venv -> ``medner extract``
and ``medner demo`` run from another directory give the tables the checkout's package gives.

The fresh venv borrows its dependencies from the project venv through a ``.pth`` file (nothing is
downloaded); that file adds the project's site-packages as a plain path entry, so the project's
editable-install finder (a ``.pth`` hook in there) is never run and ``medner_udf`` can only come
from the installed wheel. The test asserts that rather than trusting it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from medner_udf.extraction.job import run_extract
from medner_udf.extraction.settings import ExtractSettings

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOTES = {
    "a": "The man had fever and chest pain.",
    "b": "CT showed a mass in the liver.",
    "c": "",
    "d": "Aspirin 38.5 fever\r\nfever",
}


def _run(
    cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=400, check=False
    )
    tail = "\n".join(line for line in done.stderr.splitlines() if " INFO " not in line)[-4000:]
    assert done.returncode == 0, f"{cmd[:3]} failed:\n{done.stdout[-2000:]}\n{tail}"
    return done


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with the wheel built from this working tree installed in it; returns its root."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "conf", src / "conf")
    # symlinks=True keeps medner_udf/conf a link to ../conf, as in the checkout.
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "medner_udf", src / "medner_udf", symlinks=True, ignore=skip)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", src, "--no-deps", "--no-build-isolation", "-w", work / "dist"], cwd=work)
    (wheel,) = (work / "dist").glob("medner-*.whl")

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=work)
    site = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    (site / "project-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # --ignore-installed: the project venv's editable medner is visible through the .pth file and
    # must neither satisfy the requirement nor be uninstalled.
    _run(
        [*pip, "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index", "-I", wheel],
        cwd=work,
    )
    return venv


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MEDNER_CONF_DIR")}
    python = str(venv / "bin" / "python")
    env.update(PYSPARK_PYTHON=python, PYSPARK_DRIVER_PYTHON=python)
    return env


def _frame(path: Path) -> pd.DataFrame:
    df = DeltaTable(str(path)).to_pandas()
    return df.sort_values(list(df.columns), na_position="first").reset_index(drop=True)


def test_installed_package_comes_from_the_wheel_and_finds_its_conf(fresh_venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, medner_udf; from medner_udf.config import conf_file; "
        "from medner_udf.cli.jobs import script; "
        "print(json.dumps([medner_udf.__file__, str(conf_file('spark.toml')), str(script('extract'))]))"
    )
    done = _run([fresh_venv / "bin" / "python", "-c", code], cwd=tmp_path, env=_env(fresh_venv))
    package, spark_toml, job = (Path(p) for p in json.loads(done.stdout))
    for path in (package, spark_toml, job):
        assert path.resolve().is_relative_to(fresh_venv.resolve()), path
    assert spark_toml.read_text() == (ROOT / "conf" / "spark.toml").read_text()


def test_installed_medner_extract_gives_the_checkouts_tables(
    fresh_venv: Path, tmp_path: Path, gazetteer_artifact: Path, spark: Any
) -> None:
    run_dir = tmp_path / "elsewhere"
    (run_dir / "notes").mkdir(parents=True)
    notes = pa.table({"record_id": list(NOTES), "text": list(NOTES.values())})
    pq.write_table(notes, run_dir / "notes" / "p.parquet")
    args = [
        "--input",
        "notes",
        "--output",
        "warehouse",
        "--model",
        gazetteer_artifact,
        "--master",
        "local[2]",
    ]
    done = _run([fresh_venv / "bin" / "medner", "extract", *args], cwd=run_dir, env=_env(fresh_venv))
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["status_counts"] == {"ok": 3, "empty": 1, "skipped": 0, "error": 0}

    # The same run through the checkout's package.
    settings = ExtractSettings(
        input=str(run_dir / "notes"), output=str(tmp_path / "checkout"), model=str(gazetteer_artifact)
    )
    assert run_extract(spark, settings).run_id == summary["run_id"]
    for table in ("entities", "record_status"):
        installed, checkout = _frame(run_dir / "warehouse" / table), _frame(tmp_path / "checkout" / table)
        assert len(installed) > 0
        pd.testing.assert_frame_equal(installed, checkout)


def test_installed_medner_demo_submits_the_packaged_job_script(
    fresh_venv: Path, tmp_path: Path, gazetteer_artifact: Path, tiny_corpus: Path
) -> None:
    demo = ["demo", "--corpus", str(tiny_corpus), "--model", str(gazetteer_artifact), "--out", "demo"]
    # Bytes: text mode would turn a progress bar's carriage returns into newlines.
    raw = subprocess.run(
        [str(fresh_venv / "bin" / "medner"), *demo], cwd=tmp_path, env=_env(fresh_venv), capture_output=True,
        timeout=400, check=False,
    )  # fmt: skip
    stdout, stderr = raw.stdout.decode(), raw.stderr.decode()
    assert raw.returncode == 0, stderr[-4000:]
    site = fresh_venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert f"running: spark-submit {site / 'medner_udf' / 'cli' / 'jobs' / 'extract.py'}" in stderr
    # The sample query's answer: three Sign_symptom mentions (chest pain, mass, fever) in three notes.
    assert re.search(r"^\|\s*Sign_symptom\s*\|\s*3\s*\|\s*3\s*\|", stdout, re.MULTILINE), stdout
    statuses = _frame(tmp_path / "demo" / "warehouse" / "record_status")
    assert sorted(statuses.record_id) == ["1001", "1002", "1003", "1004"] and set(statuses.status) == {"ok"}
    # What a user sees in `make demo > log 2>&1`: no traceback, no progress-bar fragments.
    for stream in (stdout, stderr):
        assert "Traceback" not in stream and "\r" not in stream and "%|" not in stream

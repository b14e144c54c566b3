"""The packed-environment deployment (docs/deployment.md, bench/cluster_deploy.py).

The end-to-end run packs the environment and submits two applications to ``local-cluster``
(minutes), so it is opt-in: ``MEDNER_CLUSTER_DEPLOY=1``. The other tests are fast: the documented
commands against the bench's own, and the bench's placement checks against the failures they exist
to catch.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import cluster_deploy  # noqa: E402
from test_docs_commands import PLACEHOLDERS, blocks  # noqa: E402

DEPLOYMENT = ROOT / "docs" / "deployment.md"
PYTHON_SETTINGS = (
    "spark.pyspark.python",
    "spark.yarn.appMasterEnv.PYSPARK_PYTHON",
    "spark.kubernetes.driverEnv.PYSPARK_PYTHON",
)


def _argv(line: str) -> list[str]:
    """``line`` as bash splits it: a comment starts at a word that starts with ``#`` (shlex's comment
    mode would also cut ``archive.tar.gz#environment``)."""
    words = shlex.split(line)
    cut = next((i for i, w in enumerate(words) if w.startswith("#")), len(words))
    return words[:cut]


def _submits(code: str) -> list[list[str]]:
    """The spark-submit commands of a shell block, as argv (continuation lines joined)."""
    joined = code.replace("\\\n", " ")
    return [_argv(line) for line in joined.splitlines() if line.strip().startswith("spark-submit")]


def _readme_cluster_section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Running on a cluster")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_cluster_deploy_documented_local_cluster_line_is_the_one_the_bench_runs() -> None:
    (tested,) = [b for b in blocks(DEPLOYMENT) if b.marker and b.marker[0] == "tested-by"]
    code = tested.code
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value)
    (documented,) = _submits(code)
    bench = cluster_deploy.submit_line(cluster_deploy.JOB_SCRIPT, cluster_deploy.job_args())
    assert documented == bench


def test_cluster_deploy_every_documented_submit_runs_the_python_it_ships() -> None:
    # A typo in the alias or the path would send the workers to a Python that is not there.
    commands = [c for b in blocks(DEPLOYMENT) if b.lang == "bash" for c in _submits(b.code)]
    commands += [c for c in _submits(_readme_cluster_section())]
    assert len(commands) >= 7  # deployment.md: YARN, Kubernetes, standalone, local-cluster; README: three
    for argv in commands:
        archives = argv[argv.index("--archives") + 1]
        archive, _, alias = archives.partition("#")
        assert archive.endswith("medner-env.tar.gz") and alias, argv
        settings = dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--conf")
        pythons = {k: v for k, v in settings.items() if k in PYTHON_SETTINGS}
        assert pythons and set(pythons.values()) == {f"./{alias}/bin/python"}, argv
        assert any(a.endswith("medner-extract.py") for a in argv), argv
        client = "--deploy-mode" not in argv or argv[argv.index("--deploy-mode") + 1] == "client"
        # Client mode: the driver runs on the submitting host, where ./environment does not exist.
        assert ("spark.pyspark.driver.python" in settings) == client, argv


def _worker(cwd: Path, prefix: Path, spark_home: Path, pid: int = 1) -> dict[str, Any]:
    site = prefix / "lib" / "python3.11" / "site-packages"
    return {
        "prefix": str(prefix),
        "cwd": str(cwd),
        "pid": pid,
        "medner_udf": str(site / "medner_udf" / "__init__.py"),
        "torch": str(site / "torch" / "__init__.py"),
        "pyspark": str(spark_home / "python" / "lib" / "pyspark.zip" / "pyspark" / "__init__.py"),
    }


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A driver env, a SPARK_HOME and two executor folders, each with its unpacked ./environment."""
    paths = {"driver": tmp_path / "run" / "medner-env", "spark": tmp_path / "spark"}
    for n in range(2):
        paths[f"exec{n}"] = tmp_path / "spark" / "work" / "app-1" / str(n)
        (paths[f"exec{n}"] / "environment").mkdir(parents=True)
    paths["driver"].mkdir(parents=True)
    return paths


def _probe(layout: dict[str, Path], workers: list[dict[str, Any]]) -> dict[str, object]:
    return {"driver": {"prefix": str(layout["driver"])}, "workers": workers}


def test_cluster_deploy_probe_check_accepts_workers_in_their_unpacked_archives(
    layout: dict[str, Path],
) -> None:
    workers = [
        _worker(layout[e], layout[e] / "environment", layout["spark"], pid)
        for pid, e in enumerate(["exec0", "exec1", "exec0"])
    ]
    cwds = cluster_deploy.check_probe(_probe(layout, workers), layout["driver"], layout["spark"], ROOT)
    assert cwds == {str(layout["exec0"]), str(layout["exec1"])}


def test_cluster_deploy_probe_check_catches_workers_on_the_drivers_python(layout: dict[str, Path]) -> None:
    # The failure this deployment is about: the executors handed the driver's absolute interpreter
    # (which exists on a one-machine cluster, and nowhere on a real one).
    workers = [_worker(layout[e], layout["driver"], layout["spark"]) for e in ("exec0", "exec1")]
    with pytest.raises(cluster_deploy.DeployCheckError, match=r"is not its executor's \./environment"):
        cluster_deploy.check_probe(_probe(layout, workers), layout["driver"], layout["spark"], ROOT)


def test_cluster_deploy_probe_check_catches_the_checkouts_package(layout: dict[str, Path]) -> None:
    workers = [_worker(layout[e], layout[e] / "environment", layout["spark"]) for e in ("exec0", "exec1")]
    workers[1]["medner_udf"] = str(ROOT / "medner_udf" / "__init__.py")
    with pytest.raises(cluster_deploy.DeployCheckError, match=r"medner_udf from .*not the packed env"):
        cluster_deploy.check_probe(_probe(layout, workers), layout["driver"], layout["spark"], ROOT)


def test_cluster_deploy_probe_check_needs_both_executors(layout: dict[str, Path]) -> None:
    workers = [_worker(layout["exec0"], layout["exec0"] / "environment", layout["spark"])] * 2
    with pytest.raises(cluster_deploy.DeployCheckError, match="ran on 1 executors, expected 2"):
        cluster_deploy.check_probe(_probe(layout, workers), layout["driver"], layout["spark"], ROOT)


def test_cluster_deploy_submit_env_keeps_the_checkouts_python_out(monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = str(ROOT / ".venv" / "bin")
    monkeypatch.setenv("PATH", f"{venv_bin}:/usr/bin")
    for name in ("PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV"):
        monkeypatch.setenv(name, venv_bin)
    env = cluster_deploy.submit_env(Path("/opt/spark"))
    assert env["PATH"] == "/usr/bin" and env["SPARK_HOME"] == "/opt/spark"
    assert not {"PYTHONPATH", "PYSPARK_PYTHON", "PYSPARK_DRIVER_PYTHON", "VIRTUAL_ENV"} & set(env)


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.skipif(
    os.environ.get("MEDNER_CLUSTER_DEPLOY") != "1",
    reason="packs the environment and submits to local-cluster (minutes): set MEDNER_CLUSTER_DEPLOY=1",
)
def test_cluster_deploy_end_to_end(corpus_dir: Path, tmp_path: Path) -> None:
    figures = cluster_deploy.main(["--notes", "6", "--corpus", str(corpus_dir)])
    # main raises on a failed check; these restate the placement it proved.
    assert figures["entities"] > 0  # type: ignore[operator]
    prefixes = figures["worker_prefixes"]
    assert isinstance(prefixes, list) and len(prefixes) == cluster_deploy.N_EXECUTORS
    # Each worker ran in its executor folder under Spark's worker dir (work, app-<id>, <executor>, environment)
    parts = [Path(p).parts for p in prefixes]
    assert all(q[-1] == "environment" and q[-3].startswith("app-") and q[-4] == "work" for q in parts)
    assert not any(p.startswith(str(ROOT)) and ".venv/bin" in p for p in prefixes)

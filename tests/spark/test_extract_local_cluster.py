"""The job through spark-submit on ``local-cluster[2,1,1024]``: two real executor processes, the
artifact shipped by Spark, and GPU addresses from a fake discovery script. The tagger is the
recording test kind (tests/fake_taggers.py), which the executors' Python workers import through
``spark.executorEnv.*``: its log shows where and how often the model loaded and what it was given."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from fake_taggers import RecordingArtifact

from medner_udf.extraction.session import spark_submit_command, submit_environment

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MASTER = "local-cluster[2,1,1024]"
NOTES = {f"n{i}": ("The man had fever and chest pain.\n" * (1 + i % 3)) + f"Aspirin {i}." for i in range(12)}


@pytest.fixture(autouse=True)
def _clean_worker_dirs() -> Iterator[None]:
    """local-cluster workers keep each app's files under $SPARK_HOME/work: remove this test's."""
    work = Path(submit_environment()["SPARK_HOME"]) / "work"
    before = set(work.iterdir()) if work.is_dir() else set()
    yield
    for app in (set(work.iterdir()) if work.is_dir() else set()) - before:
        shutil.rmtree(app, ignore_errors=True)


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=submit_environment(), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if " INFO " not in line)[
        -5000:
    ]
    return done.stdout


def test_spark_submit_job_on_separate_executors(
    tmp_path: Path, recording_artifact: RecordingArtifact, worker_env_conf: dict[str, str]
) -> None:
    (tmp_path / "notes").mkdir()
    pq.write_table(
        pa.table({"record_id": list(NOTES), "text": list(NOTES.values())}), tmp_path / "notes" / "p.parquet"
    )
    out = tmp_path / "out"
    cmd = spark_submit_command(
        ROOT / "jobs" / "extract.py",
        [
            "--input",
            str(tmp_path / "notes"),
            "--output",
            str(out),
            "--model",
            str(recording_artifact.path),
            "--partitions",
            "4",
            "--batch-size",
            "2",
            "--spark-conf",
            str(ROOT / "conf" / "spark.toml"),
        ],
        MASTER,
        {"spark.ui.enabled": "false", "spark.executor.memory": "768m", **worker_env_conf},
    )
    stdout = run(cmd, ROOT)
    summary = json.loads(stdout[stdout.rindex("\n{") :].split("\n}")[0] + "\n}")
    assert summary["status_counts"] == {"ok": 12, "empty": 0, "skipped": 0, "error": 0}
    ents = DeltaTable(str(out / "entities")).to_pandas()
    assert len(ents) == sum(2 * (1 + i % 3) + 1 for i in range(12))  # fever, pain per line; Aspirin
    for r in ents.to_dict("records"):
        assert NOTES[r["record_id"]][r["begin"] : r["end"]] == r["text"]

    loads = recording_artifact.calls("load")
    # Two executors, so at least two Python workers; each loaded the model once, from the copy
    # Spark shipped (not the driver's folder), however many tasks and batches it ran.
    per_worker = Counter(c["pid"] for c in loads)
    assert len(per_worker) >= 2 and set(per_worker.values()) == {1}
    assert all(Path(c["artifact"]) != recording_artifact.path for c in loads)
    tags = recording_artifact.calls("tag")
    assert {c["pid"] for c in tags} <= set(per_worker)
    assert sum(c["notes"] for c in tags) == len(NOTES) and max(c["notes"] for c in tags) == 2


def test_each_task_uses_the_gpu_address_spark_assigned(tmp_path: Path) -> None:
    script = tmp_path / "gpus.sh"
    script.write_text('#!/bin/bash\necho \'{"name": "gpu", "addresses": ["7"]}\'\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    conf = {
        "spark.ui.enabled": "false",
        "spark.worker.resource.gpu.amount": "1",
        "spark.worker.resource.gpu.discoveryScript": str(script),
        "spark.executor.resource.gpu.amount": "1",
        "spark.executor.resource.gpu.discoveryScript": str(script),
        "spark.task.resource.gpu.amount": "1",
        "spark.executor.memory": "768m",
    }
    stdout = run(spark_submit_command(Path(__file__).parent / "gpu_probe.py", [], MASTER, conf), ROOT)
    rows = json.loads(next(line for line in stdout.splitlines() if line.startswith("PROBE "))[6:])
    assert len(rows) == 8
    assert {r["gpus"] for r in rows} == {"7"}
    assert {r["device"] for r in rows} == {"cuda:7"}
    assert len({r["pid"] for r in rows}) >= 2  # two executors, so at least two Python workers

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
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from fake_taggers import RecordingArtifact

from medner_udf.extraction.session import spark_submit_command, submit_environment

if TYPE_CHECKING:
    from s3_server import S3Server

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


def test_s3_input_output_and_model_on_separate_executors(
    tmp_path: Path, gazetteer_artifact: Path, s3_server: S3Server
) -> None:
    """Executors that share no disk with the driver: the notes, the model and the tables all live in
    the S3 server; the executors read and write through pyarrow, the driver commits through delta-rs.
    The job runs from a folder that is not the checkout."""
    from medner_udf.extraction.storage import filesystem, location
    from medner_udf.extraction.tables import open_table
    from medner_udf.taggers.gazetteer import GazetteerTagger

    opts = s3_server.options
    bucket = s3_server.make_bucket("cluster")
    fs, _ = filesystem(location(f"s3://{bucket}"), opts)
    ids = list(NOTES)
    for part in range(2):
        chunk = ids[part::2]
        pq.write_table(
            pa.table({"record_id": chunk, "text": [NOTES[i] for i in chunk]}),
            f"{bucket}/notes/part-{part}.parquet",
            filesystem=fs,
        )
    for f in gazetteer_artifact.rglob("*"):
        if f.is_file():
            with fs.open_output_stream(f"{bucket}/model/{f.relative_to(gazetteer_artifact)}") as out:
                out.write(f.read_bytes())
    args = [
        "--input",
        f"s3://{bucket}/notes",
        "--output",
        f"s3://{bucket}/out",
        "--model",
        f"s3://{bucket}/model",
    ]
    args += ["--partitions", "4", "--batch-size", "2", "--spark-conf", str(ROOT / "conf" / "spark.toml")]
    for key, value in opts.items():
        args += ["--storage-option", f"{key}={value}"]
    cmd = spark_submit_command(
        ROOT / "jobs" / "extract.py",
        args,
        MASTER,
        {"spark.ui.enabled": "false", "spark.executor.memory": "768m"},
    )
    stdout = run(cmd, tmp_path)
    assert s3_server.secret_key not in stdout
    summary = json.loads(stdout[stdout.rindex("\n{") :].split("\n}")[0] + "\n}")
    assert summary["status_counts"] == {"ok": 12, "empty": 0, "skipped": 0, "error": 0}
    assert summary["input_files_read"] == 2  # one scan, on the executors

    # The entity rows are exactly what the same tagger finds in this process.
    tagger = GazetteerTagger.load(gazetteer_artifact)
    expected = {
        (rid, e.begin, e.end, e.label)
        for rid, ents in zip(ids, tagger.tag([NOTES[i] for i in ids]), strict=True)
        for e in ents
    }
    ents = open_table(f"s3://{bucket}/out/entities", "delta", opts).read().to_pandas()
    assert set(zip(ents.record_id, ents.begin, ents.end, ents.label, strict=True)) == expected
    assert len(ents) == len(expected)
    status = open_table(f"s3://{bucket}/out/record_status", "delta", opts).read().to_pandas()
    assert sorted(status.record_id) == sorted(ids)

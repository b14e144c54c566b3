"""The extraction job on object storage against the same job on local disk, side by side in one run.

    .venv/bin/python bench/extract_s3.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --notes 5000

Builds ``--notes`` MACCROBAT-length notes (the corpus texts cycled) as Parquet files, starts an S3
server (moto in server mode on 127.0.0.1, its own process: ``tests/s3_server.py``), uploads the notes
and the model artifact to a bucket, then runs ``spark-submit jobs/extract.py --full`` twice per
repeat, alternating: input, output and model on local disk, and input, output and model as
``s3://`` URIs with ``--storage-option`` (executors read and write through pyarrow's S3 filesystem,
the driver commits through delta-rs). Prints each run's seconds inside the job and wall seconds
(JVM start included), the fastest of each mode, and the ratio S3/local (target <= 1.5). The S3
server runs on the same machine, so its own CPU time is part of the S3 figure; a real object store
adds network latency instead. Only counts and timings are printed, never note text.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_throughput import ROOT, build_notes, submit

sys.path.insert(0, str(ROOT / "tests"))
from s3_server import S3Server  # type: ignore[import-not-found]  # tests/ is not type-checked as a package


def _upload(fs: Any, local: Path, remote: str) -> None:
    for f in sorted(local.rglob("*")):
        if f.is_file():
            with fs.open_output_stream(f"{remote}/{f.relative_to(local)}") as out:
                out.write(f.read_bytes())


def run_job(inp: str, out: str, model: str, master: str, options: dict[str, str]) -> dict[str, float]:
    from medner_udf.extraction.session import spark_submit_command

    args = ["--input", inp, "--output", out, "--model", model, "--full"]
    args += ["--spark-conf", str(ROOT / "conf" / "spark.toml")]
    for k, v in options.items():
        args += ["--storage-option", f"{k}={v}"]
    cmd = spark_submit_command(ROOT / "jobs" / "extract.py", args, master, {"spark.ui.enabled": "false"})
    summary, wall = submit(cmd)
    return {
        "job_s": float(summary["seconds"]),
        "wall_s": wall,
        "n_ok": float(summary["status_counts"]["ok"]),
        "n_entities": float(summary["n_entities_added"]),
        "files_read": float(summary.get("input_files_read") or 0),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model artifact folder")
    p.add_argument("--corpus", type=Path, default=os.environ.get("MEDNER_CORPUS"))
    p.add_argument("--notes", type=int, default=5_000)
    p.add_argument("--repeats", type=int, default=1, help="runs per mode; the fastest counts")
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=Path, default=Path("/tmp/medner-bench-s3"))
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")
    if a.notes < 1 or a.repeats < 1:
        p.error("--notes and --repeats must be >= 1")
    from pyarrow import fs as pafs

    a.work.mkdir(parents=True, exist_ok=True)
    notes_dir = a.work / "notes"
    build_notes(a.corpus, a.notes, notes_dir, rows_per_file=1_000)
    server = S3Server(a.work / "s3-requests.log")
    try:
        bucket = server.make_bucket("bench")
        s3 = pafs.S3FileSystem(
            access_key=server.access_key,
            secret_key=server.secret_key,
            endpoint_override=server.endpoint.split("://", 1)[1],
            scheme="http",
            region="us-east-1",
        )
        _upload(s3, notes_dir, f"{bucket}/notes")
        _upload(s3, a.model, f"{bucket}/model")
        runs: dict[str, list[dict[str, float]]] = {"local": [], "s3": []}
        for i in range(a.repeats):
            for mode in ("local", "s3") if i % 2 == 0 else ("s3", "local"):
                if mode == "local":
                    out = a.work / "out-local"
                    shutil.rmtree(out, ignore_errors=True)
                    runs[mode].append(run_job(str(notes_dir), str(out), str(a.model), a.master, {}))
                else:
                    out_uri = f"s3://{bucket}/out-{i}"
                    runs[mode].append(
                        run_job(
                            f"s3://{bucket}/notes", out_uri, f"s3://{bucket}/model", a.master, server.options
                        )
                    )
    finally:
        server.stop()
    print(
        f"notes: {a.notes}, model: {a.model}, master: {a.master}, repeats: {a.repeats}, "
        f"load average: {os.getloadavg()[0]:.1f}"
    )
    best = {mode: min(r, key=lambda x: x["job_s"]) for mode, r in runs.items()}
    for mode, b in best.items():
        print(
            f"{mode:<5}: {b['job_s']:7.1f} s inside the job, {b['wall_s']:7.1f} s wall "
            f"({int(b['n_ok'])} notes ok, {int(b['n_entities'])} entities, input files read "
            f"{int(b['files_read']) if mode == 's3' else '-'}; all runs {[round(r['job_s'], 1) for r in runs[mode]]})"
        )
    if best["local"]["n_entities"] != best["s3"]["n_entities"]:
        raise SystemExit("the S3 run wrote a different number of entities than the local run")
    ratio = best["s3"]["job_s"] / best["local"]["job_s"]
    wall = best["s3"]["wall_s"] / best["local"]["wall_s"]
    print(f"ratio S3/local: {ratio:.2f} inside the job, {wall:.2f} wall  (target <= 1.5)")


if __name__ == "__main__":
    main()

"""End-to-end throughput of the extraction job against the raw tagger, in one run.

    .venv/bin/python bench/extract_throughput.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --notes 20000

Builds ``--notes`` MACCROBAT-length notes by cycling the corpus texts, writes them as Parquet,
times ``Tagger.tag`` in this process on a sample that cycles the same texts (all cores), then
times ``spark-submit jobs/extract.py`` (Parquet in, Delta out, ``--full``) on all notes, and prints
both throughputs and their ratio. Only counts and timings are printed, never note text.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent


def build_notes(corpus: Path, n_notes: int, folder: Path, rows_per_file: int = 5_000) -> list[str]:
    """Write ``n_notes`` notes (corpus texts cycled; ids n000000...) as Parquet files; return the texts."""
    from medner_udf.corpus.maccrobat import read_corpus

    texts = [d.text for d in read_corpus(corpus)]
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    notes = [texts[i % len(texts)] for i in range(n_notes)]
    for start in range(0, n_notes, rows_per_file):
        chunk = notes[start : start + rows_per_file]
        ids = [f"n{i:07d}" for i in range(start, start + len(chunk))]
        pq.write_table(
            pa.table({"record_id": ids, "text": chunk}), folder / f"part-{start // rows_per_file:05d}.parquet"
        )
    return notes


def raw_throughput(model: Path, notes: list[str], batch_size: int) -> tuple[float, int, float]:
    """(notes per second, notes tagged, seconds) of ``Tagger.tag`` in this process."""
    import torch

    from medner_udf.taggers.base import load_tagger

    torch.set_num_threads(os.cpu_count() or 1)
    tagger = load_tagger(model, device="cpu")
    tagger.tag(notes[:8], batch_size=batch_size)  # warm-up: lazy init, allocator
    started = time.perf_counter()
    for i in range(0, len(notes), 256):
        tagger.tag(notes[i : i + 256], batch_size=batch_size)
    seconds = time.perf_counter() - started
    return len(notes) / seconds, len(notes), seconds


def spark_throughput(
    model: Path, notes_dir: Path, out: Path, master: str, batch_size: int
) -> dict[str, float]:
    """Run the job with spark-submit; wall time includes JVM start, job time is run_extract's."""
    from medner_udf.extraction.session import spark_submit_command, submit_environment

    if out.exists():
        shutil.rmtree(out)
    cmd = spark_submit_command(
        ROOT / "jobs" / "extract.py",
        [
            "--input",
            str(notes_dir),
            "--output",
            str(out),
            "--model",
            str(model),
            "--full",
            "--batch-size",
            str(batch_size),
            "--spark-conf",
            str(ROOT / "conf" / "spark.toml"),
        ],
        master,
        {"spark.ui.enabled": "false", "spark.driver.memory": "2g"},
    )
    started = time.perf_counter()
    done = subprocess.run(cmd, env=submit_environment(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"spark-submit failed with exit status {done.returncode}")
    summary = json.loads(done.stdout[done.stdout.rindex("\n{") :].split("\n}")[0] + "\n}")
    return {
        "wall_s": wall,
        "job_s": float(summary["seconds"]),
        "n_input": float(summary["n_input"]),
        "n_ok": float(summary["status_counts"]["ok"]),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="model artifact folder")
    p.add_argument(
        "--corpus",
        type=Path,
        default=os.environ.get("MEDNER_CORPUS"),
        help="MACCROBAT2020 folder (default: $MEDNER_CORPUS)",
    )
    p.add_argument("--notes", type=int, default=20_000)
    p.add_argument("--raw-notes", type=int, default=2_000, help="sample size for the raw tagger timing")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=Path, default=Path("/tmp/medner-bench"))
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")
    if a.notes < 1 or a.raw_notes < 1:
        p.error(f"--notes and --raw-notes must be >= 1, got {a.notes}, {a.raw_notes}")

    notes = build_notes(a.corpus, a.notes, a.work / "notes")
    chars = sum(len(t) for t in notes) / len(notes)
    raw_rate, raw_n, raw_s = raw_throughput(a.model, notes[: a.raw_notes], a.batch_size)
    spark = spark_throughput(a.model, a.work / "notes", a.work / "out", a.master, a.batch_size)
    job_rate = spark["n_input"] / spark["job_s"]
    wall_rate = spark["n_input"] / spark["wall_s"]
    print(
        f"notes: {a.notes} (mean {chars:.0f} chars), model: {a.model}, master: {a.master}, "
        f"cores: {os.cpu_count()}"
    )
    print(f"raw Tagger.tag        : {raw_rate:9.1f} notes/s  ({raw_n} notes in {raw_s:.1f} s, all cores)")
    print(
        f"spark-submit job      : {job_rate:9.1f} notes/s  ({int(spark['n_input'])} notes in "
        f"{spark['job_s']:.1f} s inside the job)"
    )
    print(f"spark-submit wall     : {wall_rate:9.1f} notes/s  ({spark['wall_s']:.1f} s incl. JVM start)")
    print(f"ratio job/raw         : {job_rate / raw_rate:9.2f}   (target >= 0.90)")
    print(f"ratio wall/raw        : {wall_rate / raw_rate:9.2f}")


if __name__ == "__main__":
    main()

"""Peak resident memory of the Spark Python workers at two input sizes, side by side.

    .venv/bin/python bench/worker_memory.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --small 10000 --large 100000

Runs the extraction job (spark-submit, ``--full``) on ``--small`` and on ``--large`` notes while
polling ``VmHWM`` (the kernel's peak RSS) of every ``pyspark.daemon``/``pyspark.worker`` process, and
prints the largest per-process peak of each run and their ratio (target: within 10%).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_throughput import ROOT, build_notes


def _worker_peaks(peaks: dict[int, int], stop: threading.Event) -> None:
    """Poll /proc for Python worker processes and keep each one's peak RSS (kB)."""
    while not stop.is_set():
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"pyspark.daemon" not in cmd and b"pyspark.worker" not in cmd:
                    continue
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        peaks[int(entry)] = max(peaks.get(int(entry), 0), kb)
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        stop.wait(0.2)


def run_job(model: Path, notes_dir: Path, out: Path, master: str) -> tuple[int, int, float]:
    """(largest worker peak RSS in MiB, worker processes seen, seconds) of one job run."""
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
            "--spark-conf",
            str(ROOT / "conf" / "spark.toml"),
        ],
        master,
        {"spark.ui.enabled": "false"},
    )
    peaks: dict[int, int] = {}
    stop = threading.Event()
    poller = threading.Thread(target=_worker_peaks, args=(peaks, stop), daemon=True)
    poller.start()
    started = time.perf_counter()
    done = subprocess.run(cmd, env=submit_environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"spark-submit failed with exit status {done.returncode}")
    return (max(peaks.values()) // 1024 if peaks else 0), len(peaks), seconds


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--corpus", type=Path, default=os.environ.get("MEDNER_CORPUS"))
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=Path, default=Path("/tmp/medner-bench-mem"))
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")
    if not 0 < a.small < a.large:
        p.error(f"need 0 < --small < --large, got {a.small}, {a.large}")
    results = {}
    for n in (a.small, a.large):
        build_notes(a.corpus, n, a.work / f"notes-{n}")
        results[n] = run_job(a.model, a.work / f"notes-{n}", a.work / f"out-{n}", a.master)
    (small_mb, small_procs, small_s), (large_mb, large_procs, large_s) = results[a.small], results[a.large]
    print(f"model: {a.model}, master: {a.master}")
    print(
        f"{a.small:>7} notes: peak worker RSS {small_mb:5d} MiB ({small_procs} worker processes, {small_s:.0f} s)"
    )
    print(
        f"{a.large:>7} notes: peak worker RSS {large_mb:5d} MiB ({large_procs} worker processes, {large_s:.0f} s)"
    )
    print(f"ratio large/small: {large_mb / max(small_mb, 1):.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()

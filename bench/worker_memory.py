"""Peak resident memory of the Spark Python workers, side by side in one run: a small against a
large input with the job's own task sizing, and one task of few against one task of many notes.

    .venv/bin/python bench/worker_memory.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --small 10000 --large 100000 \
        --task-small 1000 --task-large 20000

Runs the extraction job (spark-submit, ``--full``, ``conf/spark.toml``) on ``--small`` and on
``--large`` notes on ``--master`` (default ``local[2]``; the job chooses the tasks), then on
``--task-small`` and ``--task-large`` notes as **one task** (``local[1]``, ``--partitions 1``).
Two independent readings of each run: the largest ``VmHWM`` (the kernel's peak RSS) of any
``pyspark.daemon``/``pyspark.worker`` process, polled every 0.2 s from outside, and the largest
per-task peak the job itself reports (``--task-details``: each task resets its worker's peak at
its start). Prints each run's figures and the ratios large/small (target: <= 1.10 both).
``--skip-scaling`` or ``--skip-task`` leaves one pair out. Only sizes and times are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extract_throughput import ROOT, build_notes


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether process ``pid`` is ``ancestor`` or one of its descendants (other jobs on the
    machine have Python workers too)."""
    while pid > 1:
        if pid == ancestor:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent
    return False


def _worker_peaks(peaks: dict[int, int], stop: threading.Event, root: int) -> None:
    """Poll /proc for the Python worker processes under process ``root`` and keep each one's peak
    RSS (kB)."""
    while not stop.is_set():
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
                if b"pyspark.daemon" not in cmd and b"pyspark.worker" not in cmd:
                    continue
                if not _descends_from(int(entry), root):
                    continue
                for line in Path(f"/proc/{entry}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        kb = int(line.split()[1])
                        peaks[int(entry)] = max(peaks.get(int(entry), 0), kb)
            except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError, IndexError):
                continue
        stop.wait(0.2)


def run_job(
    model: Path, notes_dir: Path, out: Path, master: str, extra_args: list[str]
) -> tuple[float, float, int, int, float]:
    """(largest polled worker peak MiB, largest task-reported peak MiB, worker processes seen, tasks,
    seconds) of one job run."""
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
            "--task-details",
            *extra_args,
        ],
        master,
        {"spark.ui.enabled": "false"},
    )
    peaks: dict[int, int] = {}
    stop = threading.Event()
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=submit_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    poller = threading.Thread(target=_worker_peaks, args=(peaks, stop, proc.pid), daemon=True)
    poller.start()
    stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    if proc.returncode != 0:
        sys.stderr.write(stderr[-4000:])
        raise SystemExit(f"spark-submit failed with exit status {proc.returncode}")
    summary = json.loads(stdout[stdout.rindex("\n{") :].split("\n}")[0] + "\n}")
    tasks = summary["task_list"]
    task_peak = max((float(t["peak_rss_mib"]) for t in tasks), default=0.0)
    polled = max(peaks.values()) / 1024 if peaks else 0.0
    return polled, task_peak, len(peaks), len(tasks), seconds


def _pair(
    label: str,
    model: Path,
    corpus: Path,
    work: Path,
    sizes: tuple[int, int],
    master: str,
    extra: list[str] | None,
    rows_per_task: int | None = None,
) -> None:
    results = {}
    for n in sizes:
        build_notes(corpus, n, work / f"notes-{n}")
        args = extra if extra is not None else ["--partitions", str(max(1, -(-n // (rows_per_task or n))))]
        results[n] = run_job(model, work / f"notes-{n}", work / f"out-{n}", master, args)
    for n, (polled, task_peak, procs, tasks, secs) in results.items():
        print(
            f"{label}, {n:>7} notes: peak worker RSS {polled:6.0f} MiB polled, {task_peak:6.0f} MiB "
            f"task-reported ({tasks} tasks, {procs} worker processes, {secs:.0f} s)"
        )
    (s_polled, s_task, *_), (l_polled, l_task, *_) = results[sizes[0]], results[sizes[1]]
    print(
        f"{label}, ratio {sizes[1]}/{sizes[0]}: {l_polled / max(s_polled, 1):.3f} polled, "
        f"{l_task / max(s_task, 1):.3f} task-reported  (target <= 1.10)"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--corpus", type=Path, default=os.environ.get("MEDNER_CORPUS"))
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--task-small", type=int, default=1_000)
    p.add_argument("--task-large", type=int, default=20_000)
    p.add_argument("--skip-scaling", action="store_true", help="leave out --small/--large")
    p.add_argument("--skip-task", action="store_true", help="leave out --task-small/--task-large")
    p.add_argument(
        "--rows-per-task",
        type=int,
        default=None,
        help="scaling pair: this many notes per task (--partitions) instead of the job's own sizing, "
        "so a reused worker runs many tasks on a smaller input",
    )
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=Path, default=Path("/tmp/medner-bench-mem"))
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")
    if not 0 < a.small < a.large or not 0 < a.task_small < a.task_large:
        p.error("need 0 < --small < --large and 0 < --task-small < --task-large")
    print(f"model: {a.model}, load average before: {os.getloadavg()[0]:.1f}")
    if not a.skip_scaling:
        label = f"job on {a.master}"
        extra: list[str] | None = []
        if a.rows_per_task:
            label += f", {a.rows_per_task} notes per task"
            extra = None
        _pair(label, a.model, a.corpus, a.work, (a.small, a.large), a.master, extra, a.rows_per_task)
    if not a.skip_task:
        _pair(
            "one task",
            a.model,
            a.corpus,
            a.work,
            (a.task_small, a.task_large),
            "local[1]",
            ["--partitions", "1"],
        )


if __name__ == "__main__":
    main()

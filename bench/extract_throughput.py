"""End-to-end throughput of the extraction job against the ideal (the raw tagger on one core times
the cores the job uses), and with the clinical heads on against entity-only, in one run.

    .venv/bin/python bench/extract_throughput.py --model models/<name>/<version> \
        --corpus ../shared/data/maccrobat/MACCROBAT2020 --notes 12000

Builds ``--notes`` MACCROBAT-length notes by cycling the corpus texts, writes them as Parquet,
times ``Tagger.tag`` in this process on **one thread** on a sample that cycles the same texts
(``--raw-notes``; the same micro-batch size as the job), then times ``spark-submit
jobs/extract.py`` (Parquet in, Delta out, ``--full``) on all notes. The ideal is the raw
single-thread rate times the job's task slots (N of ``local[N]``, n x c of
``local-cluster[n,c,m]``): what perfect scaling with no Spark, planning or commit overhead would
give. Efficiency = the job's rate (everything inside ``run_extract``: the input scan, planning,
model loads, tagging, writing and the commits) / the ideal. JVM and session start-up are
reported separately (wall time minus the job's own seconds). Each tagging task's rows, seconds
and peak worker memory come from the job's ``--task-details`` summary. Beside the ideal, the same
raw timing in one process per task slot, all at once and with no Spark: how far the machine's
cores themselves fall short of perfect scaling (shared caches, memory bandwidth, clock).

When the artifact has assertion/relation heads attached (``medner attach``), the job also runs on a
copy of the artifact without them (entity-only: same tagger, same notes, same settings) and the
bench prints both job throughputs and their ratio (issue 11's target: heads on >= 0.70 of
entity-only). ``--without-executor-env NAME`` (repeatable) also runs the job with the Spark settings
minus ``spark.executorEnv.NAME`` (say ``GLIBC_TUNABLES``, the workers' allocator settings) and prints
the shipped settings' throughput against it: what such a setting costs or gains, side by side.
``--repeats N`` runs each job N times, alternating, and keeps each one's fastest.
Only counts and timings are printed, never note text.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
    """(notes per second, notes tagged, seconds) of ``Tagger.tag`` in this process, one thread
    (as each Spark task runs it: ``torch.set_num_threads(spark.task.cpus)``)."""
    import torch

    from medner_udf.taggers.base import load_tagger

    torch.set_num_threads(1)
    tagger = load_tagger(model, device="cpu")
    tagger.tag(notes[:8], batch_size=batch_size)  # warm-up: lazy init, allocator
    started = time.perf_counter()
    for i in range(0, len(notes), batch_size):
        tagger.tag(notes[i : i + batch_size], batch_size=batch_size)
    seconds = time.perf_counter() - started
    return len(notes) / seconds, len(notes), seconds


def _raw_worker(args: tuple[str, list[str], int, Any]) -> tuple[float, int, float]:
    model, notes, batch_size, barrier = args
    barrier.wait()  # every process starts tagging at the same moment
    return raw_throughput(Path(model), notes, batch_size)


def raw_concurrent(model: Path, notes: list[str], batch_size: int, processes: int) -> list[float]:
    """Notes/s of each of ``processes`` separate processes running ``raw_throughput`` at once (no
    Spark): what the machine gives when every core tags, next to the ideal's perfect scaling."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            done = pool.map(_raw_worker, [(str(model), notes, batch_size, barrier)] * processes)
    return [rate for rate, _, _ in done]


def entity_only_copy(model: Path, folder: Path) -> Path:
    """A copy of the artifact without its clinical heads (the tagger alone)."""
    from medner_udf.clinical.base import HEAD_DIRS

    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(model, folder, ignore=shutil.ignore_patterns(*HEAD_DIRS))
    return folder


def has_heads(model: Path) -> bool:
    from medner_udf.clinical.base import HEAD_DIRS

    return any((model / task / "artifact.json").is_file() for task in HEAD_DIRS)


def task_slots(master: str) -> int:
    """Tasks the job runs at once under ``master`` (local[N], local[*], local-cluster[n,c,m])."""
    m = re.fullmatch(r"local\[(\d+|\*)(?:,\d+)?\]", master)
    if m:
        return os.cpu_count() or 1 if m.group(1) == "*" else int(m.group(1))
    m = re.fullmatch(r"local-cluster\[(\d+),\s*(\d+),\s*\d+\]", master)
    if m:
        return int(m.group(1)) * int(m.group(2))
    if master == "local":
        return 1
    raise SystemExit(f"cannot tell the task slots of master {master!r}; use local[N] or local-cluster[n,c,m]")


def submit(cmd: list[str]) -> tuple[dict[str, Any], float]:
    """Run a spark-submit command line of the job; (its printed run summary, wall seconds)."""
    from medner_udf.extraction.session import submit_environment

    started = time.perf_counter()
    done = subprocess.run(cmd, env=submit_environment(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"spark-submit failed with exit status {done.returncode}")
    summary = json.loads(done.stdout[done.stdout.rindex("\n{") :].split("\n}")[0] + "\n}")
    return summary, wall


def conf_without_env(conf: Path, names: list[str], folder: Path) -> Path:
    """A copy of the Spark settings file ``conf`` without the ``spark.executorEnv.<name>`` lines."""
    keys = {f'"spark.executorEnv.{name}"' for name in names}
    lines = conf.read_text().splitlines(keepends=True)
    kept = [line for line in lines if line.split("=", 1)[0].strip() not in keys]
    if len(lines) - len(kept) != len(keys):
        raise SystemExit(f"{conf} does not set each of {sorted(keys)} on a line of its own")
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / ("spark-without-" + "-".join(names) + ".toml")
    out.write_text("".join(kept))
    return out


def spark_throughput(
    model: Path,
    notes_dir: Path,
    out: Path,
    master: str,
    batch_size: int,
    conf: Path = ROOT / "conf" / "spark.toml",
) -> dict[str, Any]:
    """Run the job with spark-submit; wall time includes JVM start, job time is run_extract's."""
    from medner_udf.extraction.session import spark_submit_command

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
            str(conf),
            "--task-details",
        ],
        master,
        {"spark.ui.enabled": "false", "spark.driver.memory": "2g"},
    )
    summary, wall = submit(cmd)
    return {
        "wall_s": wall,
        "job_s": float(summary["seconds"]),
        "n_input": float(summary["n_input"]),
        "n_ok": float(summary["status_counts"]["ok"]),
        "n_entities": float(summary["n_entities_added"]),
        "n_relations": float(summary.get("n_relations_added", 0)),
        "tasks": summary["task_list"],
    }


def fastest(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return min(runs, key=lambda r: r["job_s"])


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
    p.add_argument(
        "--raw-notes", type=int, default=2_000, help="sample size for the raw tagger timing (0: skip it)"
    )
    p.add_argument("--repeats", type=int, default=1, help="job runs per mode; the fastest counts")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--without-executor-env",
        action="append",
        default=[],
        metavar="NAME",
        help="also run the job without spark.executorEnv.NAME of conf/spark.toml (repeatable: one run without all)",
    )
    p.add_argument("--master", default="local[2]")
    p.add_argument("--work", type=Path, default=Path("/tmp/medner-bench"))
    a = p.parse_args(argv)
    if a.corpus is None:
        p.error("--corpus (or MEDNER_CORPUS) is required")
    if a.notes < 1 or a.raw_notes < 0 or a.repeats < 1:
        p.error(
            f"--notes and --repeats must be >= 1 and --raw-notes >= 0, got {a.notes}, {a.raw_notes}, {a.repeats}"
        )

    notes = build_notes(a.corpus, a.notes, a.work / "notes")
    chars = sum(len(t) for t in notes) / len(notes)
    clinical = has_heads(a.model)
    models = {"with heads" if clinical else "job": a.model}
    if clinical:
        models = {"entity-only": entity_only_copy(a.model, a.work / "entity-only-model"), **models}
    shipped = ROOT / "conf" / "spark.toml"
    confs = dict.fromkeys(models, shipped)
    if a.without_executor_env:
        variant = "without " + "+".join(a.without_executor_env)
        models[variant] = models[next(iter(models))]
        confs[variant] = conf_without_env(shipped, a.without_executor_env, a.work)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in models}
    for i in range(a.repeats):
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for mode in order:
            out = a.work / ("out-" + mode.replace(" ", "-").replace("+", "-"))
            runs[mode].append(
                spark_throughput(models[mode], a.work / "notes", out, a.master, a.batch_size, confs[mode])
            )
    best = {mode: fastest(r) for mode, r in runs.items()}
    slots = task_slots(a.master)
    print(
        f"notes: {a.notes} (mean {chars:.0f} chars), model: {a.model}, master: {a.master} "
        f"({slots} task slots), machine cores: {os.cpu_count()}, repeats: {a.repeats}, "
        f"load average before: {os.getloadavg()[0]:.1f}"
    )
    raw_rate = None
    if a.raw_notes:
        raw_rate, raw_n, raw_s = raw_throughput(a.model, notes[: a.raw_notes], a.batch_size)
        print(f"raw Tagger.tag, 1 thread : {raw_rate:9.1f} notes/s  ({raw_n} notes in {raw_s:.1f} s)")
        print(f"ideal ({slots} x raw)         : {raw_rate * slots:9.1f} notes/s")
        if slots > 1 and slots <= (os.cpu_count() or 1):
            each = raw_concurrent(a.model, notes[: a.raw_notes], a.batch_size, slots)
            print(
                f"raw, {slots} processes at once : {sum(each):9.1f} notes/s together  (each "
                f"{', '.join(f'{r:.1f}' for r in each)}; {sum(each) / (raw_rate * slots):.2f} of the "
                "ideal: what the cores give with no Spark at all)"
            )
    rates = {}
    for mode, spark in best.items():
        rates[mode] = spark["n_input"] / spark["job_s"]
        print(
            f"job, {mode:<20} : {rates[mode]:9.1f} notes/s  ({int(spark['n_input'])} notes in "
            f"{spark['job_s']:.1f} s inside the job; JVM and session start-up "
            f"{spark['wall_s'] - spark['job_s']:.1f} s more; {int(spark['n_entities'])} entities, "
            f"{int(spark['n_relations'])} relations; all runs {[round(r['job_s'], 1) for r in runs[mode]]} s)"
        )
        tasks = spark["tasks"]
        busy = sum(float(t["seconds"]) for t in tasks) / (slots * spark["job_s"])
        print(
            f"  {len(tasks)} tagging tasks; task-slot occupancy {busy:.2f} "
            "(sum of task seconds / (slots x job seconds))"
        )
        for t in tasks:
            print(
                f"  task {int(t['partition']):3d}: {int(t['rows']):6d} notes, {float(t['seconds']):7.1f} s, "
                f"peak worker RSS {float(t['peak_rss_mib']):6.0f} MiB"
            )
    if raw_rate is not None:
        job_rate = rates[next(iter(models))]
        print(
            f"efficiency job/ideal     : {job_rate / (raw_rate * slots):9.2f}   (target >= 0.90; "
            f"{next(iter(models))} job)"
        )
    if a.without_executor_env:
        first = next(iter(models))
        print(
            f"ratio shipped/{variant:<12}: {rates[first] / rates[variant]:9.2f}   ({first} job with the "
            "shipped settings against the same job without those worker variables)"
        )
    if clinical:
        ratio = rates["with heads"] / rates["entity-only"]
        print(f"ratio heads/entity-only  : {ratio:9.2f}   (target >= 0.70)")


if __name__ == "__main__":
    main()

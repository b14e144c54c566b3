"""Small files after many incremental runs, and what ``medner maintain`` does about them.

    .venv/bin/python bench/table_maintenance.py --runs 30 --notes 1000

Runs the extraction job ``--runs`` times on ``local[2]`` into one output (Delta), each run on a
day's feed of ``--notes`` notes: 90% new records, 10% changed notes of earlier records (so runs
also rewrite earlier files). The tagger is the **gazetteer** (a handful of terms): the point is the
tables, not the model, and it keeps 30 runs to minutes. Then it prints, per table, the live file
count before and after ``maintain_tables`` (compact + vacuum + checkpoint), and for 50 record ids
the number of files a query for one ``record_id`` reads: the live files whose per-file min/max
statistics can hold the id (``DeltaTable.file_uris(file_pruning_predicate=...)``, delta-rs's own
file skipping), before and after. Counts and timings only; the notes are synthetic.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PHRASES = ["chest pain", "fever of 38.5", "aspirin", "a CT of the liver", "a mass", "no complaints"]
TERMS = [
    ("chest pain", "Sign_symptom"),
    ("fever", "Sign_symptom"),
    ("aspirin", "Medication"),
    ("CT", "Diagnostic_procedure"),
    ("mass", "Sign_symptom"),
    ("liver", "Biological_structure"),
    ("38.5", "Lab_value"),
]


def note(rng: random.Random) -> str:
    return "The patient reported " + ", ".join(rng.sample(PHRASES, 3)) + f" on day {rng.randint(1, 900)}."


def day_feed(day: int, n: int, next_id: int, rng: random.Random) -> tuple[pa.Table, int]:
    n_changed = n // 10 if next_id > 0 else 0
    changed = rng.sample(range(next_id), min(n_changed, next_id)) if next_id else []
    new = list(range(next_id, next_id + n - len(changed)))
    ids = [f"rec{i:08d}" for i in changed + new]
    return pa.table({"record_id": ids, "text": [note(rng) for _ in ids]}), next_id + len(new)


def files_for_id(uri: str, record_id: str) -> int:
    from deltalake import DeltaTable

    return len(DeltaTable(uri).file_uris(file_pruning_predicate=[("record_id", "=", record_id)]))


def probe(out: Path, ids: list[str]) -> dict[str, dict[str, float]]:
    from deltalake import DeltaTable

    result = {}
    for table in ("entities", "record_status"):
        uri = str(out / table)
        counts = [files_for_id(uri, rid) for rid in ids]
        result[table] = {
            "live_files": len(DeltaTable(uri).file_uris()),
            "files_read_per_id_mean": round(statistics.mean(counts), 2),
            "files_read_per_id_max": max(counts),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--notes", type=int, default=1000, help="notes per run")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: a temp folder)")
    parser.add_argument("--small-target-kb", type=int, default=64, help="the small compaction target")
    parser.add_argument("--skip-runs", action="store_true", help="reuse the tables already in --work/out")
    args = parser.parse_args(argv)

    from medner_udf.extraction.job import run_extract
    from medner_udf.extraction.maintenance import maintain_tables
    from medner_udf.extraction.session import build_session
    from medner_udf.extraction.settings import ExtractSettings
    from medner_udf.taggers.gazetteer import GazetteerTagger

    work = args.work or Path(tempfile.mkdtemp(prefix="medner-maint-"))
    if not args.skip_runs:
        shutil.rmtree(work / "out", ignore_errors=True)
    model = work / "models" / "benchgaz" / "1"
    GazetteerTagger.from_terms(TERMS, name="benchgaz", version="1").save(model)
    spark = build_session(
        {
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.shuffle.partitions": "4",
            "spark.driver.memory": "1g",
        },
        app_name="medner-bench-maintenance",
        master="local[2]",
    )
    spark.sparkContext.setLogLevel("ERROR")
    print(
        f"tagger: gazetteer ({len(TERMS)} terms), not a trained model; {args.runs} runs x {args.notes} notes"
    )
    rng = random.Random(13)
    next_id = 0
    run_seconds: list[float] = []
    try:
        for day in range(0 if args.skip_runs else args.runs):
            feed, next_id = day_feed(day, args.notes, next_id, rng)
            folder = work / "feed"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            pq.write_table(feed, folder / "part-0.parquet")
            started = time.perf_counter()
            run_extract(spark, ExtractSettings(input=str(folder), output=str(work / "out"), model=str(model)))
            run_seconds.append(time.perf_counter() - started)
    finally:
        spark.stop()
    if args.skip_runs:  # the same feeds' ids, without running the job again
        for day in range(args.runs):
            _, next_id = day_feed(day, args.notes, next_id, rng)
    else:
        print(f"runs: {args.runs}, seconds per run: median {statistics.median(run_seconds):.1f}")
    ids = [f"rec{i:08d}" for i in random.Random(7).sample(range(next_id), 50)]
    before = probe(work / "out", ids)
    print(
        f"after {args.runs} runs: live files "
        + json.dumps({t: before[t]["live_files"] for t in before})
        + "; files a one-record query reads (mean, max over 50 ids) "
        + json.dumps(
            {t: [before[t]["files_read_per_id_mean"], before[t]["files_read_per_id_max"]] for t in before}
        )
    )
    # Three ways to maintain copies of the same tables: the default compact (128 MiB target: one
    # file at this size), compact with a small target (what a large table's compacted files look
    # like: many, each spanning any ids) and the z-order clustering by record_id with that target.
    small = args.small_target_kb * 1024
    variants: list[tuple[str, int, bool]] = [
        ("compact, 128 MiB target (medner maintain)", 128 * 1024 * 1024, False),
        (f"compact, {args.small_target_kb} KiB target", small, False),
        (f"z-order by record_id, {args.small_target_kb} KiB target (--cluster-by-record-id)", small, True),
    ]
    for k, (name, target, cluster) in enumerate(variants):
        copy = work / f"out-maintained-{k}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(work / "out", copy)
        started = time.perf_counter()
        report = maintain_tables(str(copy), target_size=target, cluster_by_record_id=cluster)
        seconds = time.perf_counter() - started
        after = probe(copy, ids)
        for table in before:
            print(
                json.dumps(
                    {
                        "maintenance": name,
                        "table": table,
                        "files_before": before[table]["live_files"],
                        "files_after": after[table]["live_files"],
                        "query_files_before_mean": before[table]["files_read_per_id_mean"],
                        "query_files_before_max": before[table]["files_read_per_id_max"],
                        "query_files_after_mean": after[table]["files_read_per_id_mean"],
                        "query_files_after_max": after[table]["files_read_per_id_max"],
                        "seconds": round(seconds, 1),
                        "vacuumed": sum(t.files_vacuumed for t in report.tables),
                    }
                )
            )


if __name__ == "__main__":
    main()

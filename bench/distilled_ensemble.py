"""The ensemble and distillation pipeline over several seeds, with every model's figures side by side.

For each seed, with the shipped profiles and the documented commands (``medner train``,
``medner ensemble``), one step after another:

1. ``bilstm``: the BiLSTM-CNN-CRF on gold tags;
2. ``minilm``: MiniLM-L6 + CRF;
3. ``teacher``: their ensemble (weights chosen on dev);
4. ``distilled``: the BiLSTM-CNN-CRF distilled from the teacher (``inputs.distill_weight``);
5. ``distilled+minilm``: the ensemble of the distilled BiLSTM and the same MiniLM (weights on dev).

Then one table: dev and test strict, test relaxed and macro F1 of every model and seed, the mean and
sample standard deviation over seeds, read from each artifact's ``metrics.json`` (dev chose every
setting; test was scored once per artifact).

    .venv/bin/python bench/distilled_ensemble.py --out out/bench/distill --seeds 13,14,15 [--jobs 2]
    .venv/bin/python bench/distilled_ensemble.py --out out/bench/distill --seeds 13,14,15 --summarise

A step whose artifact exists is not run again, so an interrupted run resumes. ``--jobs 2`` runs two
seeds at once (one torch thread each). Training logs go to ``<out>/logs/``; only figures are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

# step -> (output folder under --out, artifact name)
STEPS: dict[str, tuple[str, str]] = {
    "bilstm": ("bilstm", "maccrobat-bilstm-cnn-crf"),
    "minilm": ("minilm", "maccrobat-minilm-crf"),
    "teacher": ("ens", "ens-bilstm-minilm"),
    "distilled": ("distill", "bilstm-distilled"),
    "distilled+minilm": ("ens", "ens-distilled-minilm"),
}


def artifact(out: Path, step: str, seed: int) -> Path:
    folder, name = STEPS[step]
    return out / folder / name / f"s{seed}"


def commands(out: Path, seed: int, weight: float, threads: int) -> list[tuple[str, list[str]]]:
    """The ``medner`` command lines of each step for ``seed``, in order."""
    version = f"s{seed}"
    common = ["--seed", str(seed), "--set", f"run.num_threads={threads}", "--set", f"run.version={version}"]

    def ensemble(step: str, members: list[str]) -> list[str]:
        folder, name = STEPS[step]
        args = ["ensemble", "--name", name, "--version", version, "--output-dir", str(out / folder)]
        for member in members:
            args += ["--member", str(artifact(out, member, seed))]
        return args

    distilled = [
        "train", "--model", "bilstm-cnn-crf", *common,
        "--set", f"run.name={STEPS['distilled'][1]}",
        "--set", f"inputs.teacher={artifact(out, 'teacher', seed)}",
        "--set", f"inputs.distill_weight={weight}",
        # Each epoch also computes the teacher's marginals: the run stops early on dev, not on the clock.
        "--set", "max_minutes=60",
        "--output-dir", str(out / "distill"),
    ]  # fmt: skip
    return [
        ("bilstm", ["train", "--model", "bilstm-cnn-crf", *common, "--output-dir", str(out / "bilstm")]),
        ("minilm", ["train", "--model", "transformer", *common, "--output-dir", str(out / "minilm")]),
        ("teacher", ensemble("teacher", ["bilstm", "minilm"])),
        ("distilled", distilled),
        ("distilled+minilm", ensemble("distilled+minilm", ["distilled", "minilm"])),
    ]


def run_seed(out: Path, seed: int, weight: float, threads: int) -> None:
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for step, args in commands(out, seed, weight, threads):
        if (artifact(out, step, seed) / "metrics.json").is_file():
            continue
        log = logs / f"{step.replace('+', '-')}-s{seed}.log"
        with log.open("w") as sink:
            done = subprocess.run(
                [sys.executable, "-m", "medner_udf.cli", *args],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
            )
        if done.returncode != 0:
            raise SystemExit(f"seed {seed}: step {step} failed (exit {done.returncode}); see {log}")


def figures(out: Path, step: str, seed: int) -> dict[str, float] | None:
    path = artifact(out, step, seed) / "metrics.json"
    if not path.is_file():
        return None
    metrics: dict[str, Any] = json.loads(path.read_text())
    return {
        "dev_strict": metrics["dev"]["strict"]["f1"],
        "test_strict": metrics["test"]["strict"]["f1"],
        "test_relaxed": metrics["test"]["relaxed"]["f1"],
        "test_macro": metrics["test"]["macro_f1"],
    }


def summarise(out: Path, seeds: list[int]) -> str:
    columns = ("dev_strict", "test_strict", "test_relaxed", "test_macro")
    lines = [
        "| model | " + " | ".join(f"s{s} test strict" for s in seeds) + " | " + " | ".join(columns) + " |",
        "|---" * (1 + len(seeds) + len(columns)) + "|",
    ]
    for step in STEPS:
        rows = {s: figures(out, step, s) for s in seeds}
        done = [r for r in rows.values() if r is not None]
        per_seed = [f"{r['test_strict']:.4f}" if r else "-" for r in rows.values()]
        stats = []
        for column in columns:
            values = [r[column] for r in done]
            if len(values) >= 2:
                stats.append(f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}")
            else:
                stats.append(f"{values[0]:.4f}" if values else "-")
        lines.append(f"| {step} | " + " | ".join(per_seed + stats) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="13,14,15")
    parser.add_argument("--distill-weight", type=float, default=0.8, help="chosen on dev, docs/models.md")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run at once")
    parser.add_argument("--summarise", action="store_true", help="only print the table of what is there")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not args.summarise:
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            list(pool.map(lambda s: run_seed(args.out, s, args.distill_weight, args.threads), seeds))
    print(summarise(args.out, seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

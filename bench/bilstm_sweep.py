"""Dev-only settings sweep for the BiLSTM-CNN-CRF: train variants of conf/train.toml side by side.

Each variant is the shipped settings plus ``KEY=VALUE`` overrides; each is trained once per seed,
several processes at a time, and scored on **dev only** (test is never scored here: the sweep chooses
settings, and settings are chosen on dev). Prints one row per variant: best dev strict F1 (mean over
seeds), the best epoch, minutes to it, and the device it trained on. ``--set KEY=VALUE`` applies to every variant. Each finished run is also
written to ``OUT/runs/<variant>-s<seed>.json`` at once, so a sweep cut short keeps what it finished.

    .venv/bin/python bench/bilstm_sweep.py --jobs 2 \\
        --variant base --variant "lm=lm_weight=0.1" --variant "wide=lstm_hidden=300,dropout=0.45"

A variant is ``NAME`` (the shipped settings) or ``NAME=KEY=VALUE[,KEY=VALUE...]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from medner_udf.config import parse_overrides
from medner_udf.corpus.maccrobat import corpus_path
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import train


def parse_variant(spec: str) -> tuple[str, dict[str, str]]:
    """``name=k=v,k=v`` -> (name, {k: v}); a bare ``name`` is the shipped settings."""
    name, sep, rest = spec.partition("=")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"variant name {name!r} must be letters, digits, - and _")
    return name, (parse_overrides(rest.split(",")) if sep else {})


def _run(
    name: str, seed: int, overrides: dict[str, str], common: dict[str, Any], out: Path
) -> dict[str, Any]:
    """One training run (module level, so a process pool can pickle it); dev only."""
    # A variant may set its own seed (to gauge seed noise under one name per run).
    values = {**common, "seed": seed, **overrides, "evaluate_test": False, "progress": False}
    values["version"] = f"sweep-{name}-s{values['seed']}"
    settings = load_train_settings("bilstm-cnn-crf", overrides=values)
    started = time.monotonic()
    metrics = train(settings).metrics
    best = metrics["history"][metrics["best_epoch"] - 1]
    row = {
        "variant": name,
        "seed": settings.run.seed,
        "overrides": overrides,
        "dev_strict_f1": metrics["dev"]["strict"]["f1"],
        "dev_relaxed_f1": metrics["dev"]["relaxed"]["f1"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": len(metrics["history"]),
        "minutes_to_best_dev": round(best["elapsed_seconds"] / 60, 2),
        "wall_minutes": round((time.monotonic() - started) / 60, 2),
        "stop_reason": metrics["stop_reason"],
        "device": metrics["device"],
        "train_seconds_per_epoch": round(statistics.mean(h["train_seconds"] for h in metrics["history"]), 1),
        "dev_curve": [round(h["dev_strict_f1"], 4) for h in metrics["history"]],
    }
    runs = out / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    (runs / f"{name}-s{seed}.json").write_text(json.dumps(row, indent=1))
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--variant", action="append", required=True, help="NAME or NAME=KEY=VALUE,...")
    parser.add_argument("--seeds", type=int, nargs="+", default=[13])
    parser.add_argument("--jobs", type=int, default=2, help="trainings at the same time (processes)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--max-minutes", type=float, default=None, help="override each run's training budget")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="for every variant")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/bench/bilstm-sweep"))
    args = parser.parse_args(argv)

    variants = dict(parse_variant(v) for v in args.variant)
    if len(variants) != len(args.variant):
        parser.error("variant names must be unique")
    common: dict[str, Any] = {
        "corpus": str(corpus_path(args.corpus)),
        "output_dir": str(args.out / "models"),
        "num_threads": args.threads,
        "device": args.device,
        "max_minutes": args.max_minutes,
    }
    common = {k: v for k, v in common.items() if v is not None} | parse_overrides(args.set)
    rows: list[dict[str, Any]] = []
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures: dict[Future[dict[str, Any]], str] = {
            pool.submit(_run, name, seed, overrides, common, args.out): f"{name}-s{seed}"
            for seed in args.seeds
            for name, overrides in variants.items()
        }
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:  # one failed variant must not lose the others' results
                print(f"{futures[future]} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                continue
            rows.append(row)
            print(
                f"{row['variant']}-s{row['seed']}: dev {row['dev_strict_f1']:.4f} at epoch {row['best_epoch']}"
                f"/{row['epochs_run']} ({row['minutes_to_best_dev']} min)",
                file=sys.stderr,
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(
        "\n| variant | overrides | best dev strict F1 (mean over seeds) | per seed | best epoch | min to best | device |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, overrides in variants.items():
        mine = sorted((r for r in rows if r["variant"] == name), key=lambda r: r["seed"])
        if not mine:
            print(f"| {name} | {overrides} | failed | | | | |")
            continue
        f1s = [r["dev_strict_f1"] for r in mine]
        print(
            f"| {name} | {', '.join(f'{k}={v}' for k, v in overrides.items()) or 'shipped'} | "
            f"{statistics.mean(f1s):.4f} | {' / '.join(f'{f:.4f}' for f in f1s)} | "
            f"{' / '.join(str(r['best_epoch']) for r in mine)} | "
            f"{' / '.join(str(r['minutes_to_best_dev']) for r in mine)} | {mine[0]['device']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

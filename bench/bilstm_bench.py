"""Benchmark of the train-job issue: BiLSTM-CNN-CRF (3 seeds) vs the feature CRF, side by side.

Prints, for each model: dev and test strict entity micro F1 (mean and spread over seeds), relaxed and
macro F1, minutes to the best dev epoch, and CPU inference throughput of ``Tagger.tag`` with one
thread (tokens per second per core). Model choice uses dev only; test is scored once per model.

    .venv/bin/python bench/bilstm_bench.py      # full: 3 seeds + feature CRF, 2 processes of 1 thread
    .venv/bin/python bench/bilstm_bench.py --seeds 13 --max-minutes 2   # a quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.evaluation.feature_crf import (
    DEFAULT_C1,
    DEFAULT_C2,
    DEFAULT_MAX_ITERATIONS,
    evaluate_model,
    train_feature_crf,
)
from medner_udf.taggers.base import Tagger, load_tagger
from medner_udf.text.tokens import tokenize
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import train
from medner_udf.training.settings import TrainSettings


def inference_tokens_per_second(tagger: Tagger, texts: list[str], repeats: int = 2) -> float:
    """Best of ``repeats`` timed passes of ``tagger.tag`` over ``texts`` on one CPU thread."""
    n_tokens = sum(len(tokenize(t)) for t in texts)
    tagger.tag(texts[:4])  # warm-up: allocator, lazy init
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tagger.tag(texts)
        best = min(best, time.perf_counter() - started)
    return n_tokens / best


def _train_one(settings: TrainSettings) -> tuple[Path, dict[str, Any]]:
    """One seed's training run (module level, so a process pool can pickle it)."""
    result = train(settings)
    return result.artifact_dir, result.metrics


def _feature_crf(root: Path, max_iterations: int) -> dict[str, list[float]]:
    """The feature-CRF peer on the same split: trained on train, scored on dev and test."""
    train_sents, _ = to_sentences(read_corpus(root, "train"))
    started = time.perf_counter()
    crf = train_feature_crf(train_sents, DEFAULT_C1, DEFAULT_C2, max_iterations)
    train_min = (time.perf_counter() - started) / 60
    dev = evaluate_model(crf, read_corpus(root, "dev"))
    test = evaluate_model(crf, read_corpus(root, "test"))
    return {
        "dev_strict_f1": [dev.strict.f1], "test_strict_f1": [test.strict.f1],
        "test_relaxed_f1": [test.relaxed.f1], "test_macro_f1": [test.macro_f1],
        "minutes_to_best_dev": [train_min],
    }  # fmt: skip


def _spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} (min {min(values):.4f}, max {max(values):.4f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[13, 14, 15])
    parser.add_argument("--max-minutes", type=float, default=None, help="override the training budget")
    parser.add_argument("--out", type=Path, default=Path("out/bench/bilstm"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each training process")
    parser.add_argument("--skip-feature-crf", action="store_true")
    parser.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="trainings at the same time (processes: seeds and the feature CRF)",
    )
    parser.add_argument("--fcrf-iterations", type=int, default=DEFAULT_MAX_ITERATIONS)
    args = parser.parse_args(argv)

    root = corpus_path(args.corpus)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"machine_cores": torch.get_num_threads(), "seeds": args.seeds}
    test_docs = read_corpus(root, "test")

    base = load_train_settings("bilstm-cnn-crf")
    runs: dict[str, list[float]] = {k: [] for k in (
        "dev_strict_f1", "test_strict_f1", "test_relaxed_f1", "test_macro_f1", "minutes_to_best_dev",
        "train_minutes", "best_epoch", "epochs_run", "tokens_per_second_per_core")}  # fmt: skip
    seed_settings = [
        load_train_settings(
            "bilstm-cnn-crf",
            overrides={
                "run.seed": seed,
                "data.corpus": str(root),
                "run.output_dir": str(args.out / "models"),
                "run.version": f"bench-seed{seed}",
                "run.num_threads": args.threads,
                "run.progress": False,
                "optim.max_minutes": args.max_minutes or base.optim.max_minutes,
            },
        )
        for seed in args.seeds
    ]
    # The feature CRF and the seeds share one process pool, so the peer runs side by side with the
    # BiLSTM in the same invocation (crfsuite is single-threaded; each seed gets --threads threads).
    print(
        f"BiLSTM-CNN-CRF seeds {args.seeds}{'' if args.skip_feature_crf else ' and the feature CRF'}, "
        f"{args.jobs} at a time ...",
        file=sys.stderr,
        flush=True,
    )
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        fcrf = None if args.skip_feature_crf else pool.submit(_feature_crf, root, args.fcrf_iterations)
        outcomes = list(pool.map(_train_one, seed_settings))
        if fcrf is not None:
            results["feature_crf"] = fcrf.result()
            results["feature_crf_iterations"] = args.fcrf_iterations
    artifacts = []
    for artifact_dir, m in outcomes:
        best = m["history"][m["best_epoch"] - 1]
        runs["dev_strict_f1"].append(m["dev"]["strict"]["f1"])
        runs["test_strict_f1"].append(m["test"]["strict"]["f1"])
        runs["test_relaxed_f1"].append(m["test"]["relaxed"]["f1"])
        runs["test_macro_f1"].append(m["test"]["macro_f1"])
        runs["minutes_to_best_dev"].append(best["elapsed_seconds"] / 60)
        runs["train_minutes"].append(m["train_minutes"])
        runs["best_epoch"].append(m["best_epoch"])
        runs["epochs_run"].append(len(m["history"]))
        artifacts.append(artifact_dir)
    # Inference on one core, after training, with nothing else running in this benchmark.
    torch.set_num_threads(1)
    for artifact_dir in artifacts:
        tagger = load_tagger(artifact_dir, device="cpu")
        runs["tokens_per_second_per_core"].append(
            inference_tokens_per_second(tagger, [d.text for d in test_docs])
        )
    results["bilstm_cnn_crf"] = runs
    results["artifacts"] = [str(a) for a in artifacts]
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    print(
        "\n| model | dev strict F1 | test strict F1 | test relaxed F1 | test macro F1 | min to best dev | best epoch of epochs run | tokens/s/core |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, r in (("BiLSTM-CNN-CRF", runs), ("feature CRF", results.get("feature_crf"))):
        if not r:
            continue
        tps = _spread(r["tokens_per_second_per_core"]) if "tokens_per_second_per_core" in r else "n/a"
        print(
            f"| {name} | {_spread(r['dev_strict_f1'])} | {_spread(r['test_strict_f1'])} | "
            f"{_spread(r['test_relaxed_f1'])} | {_spread(r['test_macro_f1'])} | "
            f"{_spread(r['minutes_to_best_dev'])} | "
            f"{'/'.join(str(int(e)) for e in r.get('best_epoch', []))} of {'/'.join(str(int(e)) for e in r.get('epochs_run', []))} | {tps} |"
        )
    print(f"\nresults written to {args.out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU paths of both taggers: train on CUDA, then time batched tagging on the GPU beside one CPU thread.

For the BiLSTM-CNN-CRF and the transformer (MiniLM + CRF), each from its shipped settings:

- trains with ``device=cuda`` (the transformer with bf16 autocast) and reports the device the train
  job recorded, minutes to the best dev epoch and dev/test strict F1;
- loads the artifact on the GPU and times ``Tagger.tag`` over MACCROBAT notes at several batch sizes
  (tokens per second, best of ``--repeats``), and on one CPU thread on the same notes;
- compares the GPU's entities with the CPU's (share of identical (begin, end, label) entities): cuDNN
  and bf16 arithmetic differ from fp32 CPU arithmetic in the last bits, so a few boundary flips are
  expected, a large disagreement is a bug.

    python bench/gpu_paths.py --out out/bench/gpu      # needs a CUDA device
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from medner_udf.config import parse_overrides
from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.taggers.base import Tagger, load_tagger
from medner_udf.text.tokens import tokenize
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import train


def time_tagging(tagger: Tagger, texts: list[str], batch_size: int, repeats: int) -> float:
    """Best-of-``repeats`` tokens per second of ``tagger.tag(texts)`` (results come back to the host,
    so the GPU's work is finished when the clock stops)."""
    n_tokens = sum(len(tokenize(t)) for t in texts)
    tagger.tag(texts[:8], batch_size=batch_size)  # warm-up: kernels, allocator
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        tagger.tag(texts, batch_size=batch_size)
        best = min(best, time.perf_counter() - started)
    return n_tokens / best


def agreement(a: Tagger, b: Tagger, texts: list[str]) -> float:
    """Identical entities over all entities either tagger found (Jaccard on (note, begin, end, label))."""
    ea = {(n, e.begin, e.end, e.label) for n, ents in enumerate(a.tag(texts)) for e in ents}
    eb = {(n, e.begin, e.end, e.label) for n, ents in enumerate(b.tag(texts)) for e in ents}
    return len(ea & eb) / len(ea | eb) if ea | eb else 1.0


def check(
    kind: str,
    artifact: Path,
    metrics: dict[str, Any],
    texts: list[str],
    cpu_texts: list[str],
    batch_sizes: list[int],
    repeats: int,
) -> dict[str, Any]:
    gpu = load_tagger(artifact, device="cuda")
    cpu = load_tagger(artifact, device="cpu")
    torch.set_num_threads(1)
    best = metrics["history"][metrics["best_epoch"] - 1]
    row: dict[str, Any] = {
        "tagger": kind,
        "trained_on": metrics["device"],
        "best_epoch": metrics["best_epoch"],
        "epochs_run": len(metrics["history"]),
        "minutes_to_best_dev": round(best["elapsed_seconds"] / 60, 2),
        "dev_strict_f1": round(metrics["dev"]["strict"]["f1"], 4),
        "test_strict_f1": round(metrics["test"]["strict"]["f1"], 4),
        "gpu_tokens_per_second": {
            str(bs): round(time_tagging(gpu, texts, bs, repeats)) for bs in batch_sizes
        },
        "cpu_1_thread_tokens_per_second": round(time_tagging(cpu, cpu_texts, 64, 1)),
        "gpu_cpu_entity_agreement": round(agreement(gpu, cpu, cpu_texts), 4),
        "gpu_notes": len(texts),
        "cpu_notes": len(cpu_texts),
    }
    print(json.dumps(row), flush=True)
    return row


def train_on_gpu(which: str, values: dict[str, Any]) -> tuple[str, Path, dict[str, Any]]:
    """Train ``which`` ("bilstm" or "transformer") from its shipped settings plus ``values``;
    return (artifact kind, artifact folder, metrics)."""
    kind = "bilstm-cnn-crf" if which == "bilstm" else "transformer"
    result = train(load_train_settings(kind, overrides={**values, "progress": False}))
    return kind, result.artifact_dir, result.metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("out/bench/gpu"))
    parser.add_argument("--models", type=Path, default=Path("out/bench/gpu/models"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip", choices=["bilstm", "transformer"], action="append", default=[])
    parser.add_argument("--bilstm-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--transformer-set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 2
    root = corpus_path(args.corpus)
    texts = [d.text for d in read_corpus(root, "all")]
    cpu_texts = [d.text for d in read_corpus(root, "test")]
    common = {"corpus": str(root), "output_dir": str(args.models), "device": "cuda", "version": "gpu"}
    overrides = {"bilstm": args.bilstm_set, "transformer": args.transformer_set}
    rows = []
    for which in ("bilstm", "transformer"):
        if which not in args.skip:
            kind, artifact, metrics = train_on_gpu(which, common | parse_overrides(overrides[which]))
            rows.append(check(kind, artifact, metrics, texts, cpu_texts, args.batch_sizes, args.repeats))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(
        json.dumps({"device": torch.cuda.get_device_name(), "rows": rows}, indent=1)
    )
    print(f"\n{torch.cuda.get_device_name()}")
    print("| tagger | trained on | best epoch | min to best dev | dev F1 | test F1 | GPU tokens/s by batch | "
          "CPU 1-thread tokens/s | GPU/CPU agreement |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gpu_tps = ", ".join(f"{bs}: {v:,}" for bs, v in r["gpu_tokens_per_second"].items())
        print(
            f"| {r['tagger']} | {r['trained_on']} | {r['best_epoch']} of {r['epochs_run']} | "
            f"{r['minutes_to_best_dev']} | {r['dev_strict_f1']} | {r['test_strict_f1']} | {gpu_tps} | "
            f"{r['cpu_1_thread_tokens_per_second']:,} | {r['gpu_cpu_entity_agreement']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU inference throughput of ``Tagger.tag`` on MACCROBAT notes, one thread (= per core).

Tags the 200 corpus notes (median ~500 tokens each) with each model and batch size and prints
tokens per second of wall time and of the process's CPU time, best of ``--repeats`` passes. Several
``--model``s are measured side by side in one run, their passes interleaved (model A, B, C, then A,
B, C again), so a machine whose load changes during the run slows each model alike; the CPU-time
rate is the one to compare on a busy machine. Works for any artifact kind.

    .venv/bin/python bench/tagger_inference.py --model models/maccrobat-bilstm-cnn-crf/<version> \
        [--model models/<another>/<version> ...] [--batch-sizes 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.taggers.base import Tagger, load_tagger
from medner_udf.text.tokens import tokenize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, action="append", required=True, help="repeat to compare")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    texts = [d.text for d in read_corpus(corpus_path(args.corpus), "all")]
    n_tokens = sum(len(tokenize(t)) for t in texts)
    taggers: list[Tagger] = []
    for path in args.model:
        tagger = load_tagger(path, device="cpu")
        tagger.tag(texts[:4])  # warm-up
        taggers.append(tagger)
    print(f"{len(texts)} notes, {n_tokens:,} tokens; torch threads {args.threads}; best of {args.repeats}")
    print("| model | kind | batch size | seconds | tokens/s | tokens/s per thread | tokens per CPU second |")
    print("|---|---|---|---|---|---|---|")
    for size in args.batch_sizes:
        wall = [float("inf")] * len(taggers)
        cpu = [float("inf")] * len(taggers)
        for _ in range(args.repeats):
            for i, tagger in enumerate(taggers):
                started, started_cpu = time.perf_counter(), time.process_time()
                tagger.tag(texts, batch_size=size)
                wall[i] = min(wall[i], time.perf_counter() - started)
                cpu[i] = min(cpu[i], time.process_time() - started_cpu)
        for tagger, w, c in zip(taggers, wall, cpu, strict=True):
            print(f"| {tagger.name}/{tagger.version} | {tagger.kind} | {size} | {w:.2f} | {n_tokens / w:,.0f} | "
                  f"{n_tokens / w / args.threads:,.0f} | {n_tokens / c:,.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

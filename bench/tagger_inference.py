"""CPU inference throughput of ``Tagger.tag`` on MACCROBAT notes, one thread (= per core).

Tags the 200 corpus notes (median ~500 tokens each) with each batch size side by side and prints
tokens per second, best of ``--repeats`` passes. Works for any artifact kind.

    .venv/bin/python bench/tagger_inference.py --model models/maccrobat-bilstm-cnn-crf/<version>
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.taggers.base import load_tagger
from medner_udf.text.tokens import tokenize


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 128])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    tagger = load_tagger(args.model, device="cpu")
    texts = [d.text for d in read_corpus(corpus_path(args.corpus), "all")]
    n_tokens = sum(len(tokenize(t)) for t in texts)
    tagger.tag(texts[:4])  # warm-up
    print(f"model {tagger.name} {tagger.version} ({tagger.kind}); {len(texts)} notes, {n_tokens:,} tokens; "
          f"torch threads {args.threads}")  # fmt: skip
    print("| batch size | seconds | tokens/s | tokens/s per thread |")
    print("|---|---|---|---|")
    for size in args.batch_sizes:
        best = float("inf")
        for _ in range(args.repeats):
            started = time.perf_counter()
            tagger.tag(texts, batch_size=size)
            best = min(best, time.perf_counter() - started)
        print(f"| {size} | {best:.2f} | {n_tokens / best:,.0f} | {n_tokens / best / args.threads:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

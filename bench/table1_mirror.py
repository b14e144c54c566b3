"""The seed study's Table I under a mirror of its own protocol, beside medner's document-level figure.

For each model family and each split seed: a seeded random 90/10 document split (dev carved from the
training part, ``medner_udf.corpus.splits.random_split``), the model trained on train with its shipped
settings and its epoch chosen on dev, then the 20 test documents scored with every figure the seed's
unstated "F1" could be (``medner_udf.evaluation.token_metrics``: seqeval default and strict, token
micro F1 over non-O tokens, token F1 weighted over all labels with O, token accuracy) and with
medner's own strict and relaxed entity F1 against all gold mentions (``score_spans``), on the same
predictions. docs/table1.md defines the protocol.

    .venv/bin/python bench/table1_mirror.py --out out/bench/table1 --seeds 1,2,3,4,5 \
        --models bilstm,minilm,feature-crf [--threads 1]
    .venv/bin/python bench/table1_mirror.py --out out/bench/table1 --summarise

Each finished (model, split seed) appends one JSON line to ``<out>/results.jsonl`` and is skipped
when the command is run again, so a long run can be resumed. Only figures are printed, never text.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medner_udf.config import parse_overrides
from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document, corpus_path
from medner_udf.corpus.splits import split_documents
from medner_udf.evaluation.feature_crf import predict_docs, train_feature_crf
from medner_udf.evaluation.scoring import score_spans
from medner_udf.evaluation.token_metrics import token_metrics
from medner_udf.taggers.base import load_tagger
from medner_udf.text.types import Span
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import predict_spans, train

# model name -> (profile of conf/train.toml, what the seed's table calls it); None: the feature CRF
MODELS: dict[str, tuple[str | None, str]] = {
    "bilstm": ("bilstm-cnn-crf", "BiLSTM-CNN-CRF"),
    "minilm": ("transformer", "BERT family (MiniLM-L6, BERT architecture) + CRF"),
    "mpnet": ("transformer", "MPNet (all-mpnet-base-v2) + CRF"),
    "feature-crf": (None, "feature CRF (peer)"),
}
FIGURES = ("seqeval_f1", "seqeval_strict_f1", "token_micro_f1", "token_weighted_f1", "token_accuracy",
           "strict_f1", "relaxed_f1")  # fmt: skip


def _neural(
    model: str, seed: int, corpus: str, out: Path, threads: int, extra: dict[str, Any]
) -> Callable[[list[Document]], dict[str, list[Span]]]:
    profile = MODELS[model][0]
    settings = load_train_settings(
        None,
        profile=profile,
        overrides={
            "data.split": f"random-{seed}",
            "data.corpus": corpus,
            "run.name": f"mirror-{model}",
            "run.version": f"split{seed}",
            "run.output_dir": str(out / "models"),
            "run.num_threads": threads,
            "run.progress": False,
            "run.evaluate_test": False,  # scored below with every figure
            **extra,
        },
    )
    tagger = load_tagger(train(settings).artifact_dir, device="cpu")
    return lambda docs: predict_spans(tagger, docs)


def run_one(
    model: str, seed: int, corpus: str, out: Path, threads: int, encoder: str | None, sets: dict[str, str]
) -> dict[str, Any]:
    started = time.monotonic()
    train_docs, dev_docs, test_docs = split_documents(corpus, f"random-{seed}")
    if model == "feature-crf":
        sentences, _ = to_sentences(train_docs)
        crf = train_feature_crf(sentences)
        predictions = predict_docs(crf, test_docs)
    else:
        extra: dict[str, Any] = {
            **sets,
            **({"inputs.encoder": encoder} if model == "mpnet" and encoder else {}),
        }
        if model == "mpnet" and not encoder:
            raise SystemExit(
                "--encoder PATH (the all-mpnet-base-v2 folder, `make mpnet`) is needed for mpnet"
            )
        predictions = _neural(model, seed, corpus, out, threads, extra)(test_docs)
    tokens = token_metrics(test_docs, predictions)
    entities = score_spans({d.doc_id: d.mentions for d in test_docs}, predictions)
    return {
        "model": model,
        "split_seed": seed,
        "n_train": len(train_docs),
        "n_dev": len(dev_docs),
        "n_test": len(test_docs),
        "test_ids": [d.doc_id for d in test_docs],
        "seqeval_f1": tokens.seqeval.f1,
        "seqeval_strict_f1": tokens.seqeval_strict.f1,
        "token_micro_f1": tokens.token_micro.f1,
        "token_weighted_f1": tokens.token_weighted_f1,
        "token_accuracy": tokens.token_accuracy,
        "strict_f1": entities.strict.f1,
        "relaxed_f1": entities.relaxed.f1,
        "minutes": round((time.monotonic() - started) / 60, 1),
    }


def summarise(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | split seeds | " + " | ".join(FIGURES) + " |",
        "|---|---|" + "---|" * len(FIGURES),
    ]
    for model in MODELS:
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["split_seed"])
        if not mine:
            continue
        cells = []
        for figure in FIGURES:
            values = [r[figure] for r in mine]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.mean(values):.3f}{spread}")
        seeds = ",".join(str(r["split_seed"]) for r in mine)
        lines.append(f"| {MODELS[model][1]} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="1,2,3,4,5", help="split seeds")
    parser.add_argument("--models", default="bilstm,minilm,feature-crf", help=f"of {','.join(MODELS)}")
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--encoder", default=None, help="the all-mpnet-base-v2 folder (model mpnet)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="for the neural models"
    )
    parser.add_argument("--summarise", action="store_true", help="only print the table of what ran")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if not args.summarise:
        torch.set_num_threads(args.threads)
        corpus = str(corpus_path(args.corpus))
        models = [m.strip() for m in args.models.split(",")]
        unknown = sorted(set(models) - set(MODELS))
        if unknown:
            parser.error(f"unknown models {unknown}; known: {sorted(MODELS)}")
        done = {(r["model"], r["split_seed"]) for r in rows}
        for seed in (int(s) for s in args.seeds.split(",")):
            for model in models:
                if (model, seed) in done:
                    continue
                row = run_one(
                    model, seed, corpus, args.out, args.threads, args.encoder, parse_overrides(args.set)
                )
                rows.append(row)
                with results.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")
                print(json.dumps({k: v for k, v in row.items() if k != "test_ids"}), flush=True)
    print(summarise(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

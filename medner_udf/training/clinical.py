"""Training the assertion and relation models: linear models fitted by their own solver.

They are not trained by the engine's gradient loop: a multinomial logistic regression over sparse
features is a convex problem that scikit-learn's L-BFGS solves exactly, in seconds (assertion) or
about a minute (relations) on one core. ``medner train --model assertion|relations`` still reaches
them through the training registry (``StandaloneTrainer``), and they read the same split, write the
same kind of artifact (metrics.json, a model card) and score test once, after fitting, when asked.

Only training needs scikit-learn and scipy; the artifact holds plain arrays (``ClinicalModel``).
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medner_udf.clinical.assertion import KIND as ASSERTION_KIND
from medner_udf.clinical.assertion import AssertionClassifier
from medner_udf.clinical.assertion_features import (
    CUES,
    TERMINATORS,
    AssertionFeatures,
    CueWords,
    assertion_features,
)
from medner_udf.clinical.base import ClinicalInfo, ClinicalModel
from medner_udf.clinical.features import (
    FeatureIndex,
    FeatureRows,
    IntArray,
    LinearModel,
    Note,
    Vocabulary,
    word_form,
)
from medner_udf.clinical.relation_features import (
    RelationConfig,
    candidate_pairs,
    compatibility,
    relation_features,
)
from medner_udf.clinical.relations import KIND as RELATIONS_KIND
from medner_udf.clinical.relations import RELATION_TYPES, RelationExtractor, relation_classes
from medner_udf.corpus.maccrobat import ASSERTIONS, Document
from medner_udf.evaluation.clinical import ClassScores, evaluate_assertion, evaluate_relations
from medner_udf.taggers.artifact import CARD_FILE, new_version
from medner_udf.text.tokens import tokenize
from medner_udf.training.base import StandaloneTrainer
from medner_udf.training.loop import TrainResult, read_split
from medner_udf.training.settings import TrainSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinearFit:
    """How the linear model is fitted (chosen on dev, docs/clinical.md)."""

    c: float = 1.0  # inverse L2 regularisation strength (scikit-learn's C)
    max_iter: int = 3000
    min_feature_count: int = 2  # features seen fewer times in training are dropped
    min_word_count: int = 2  # words seen fewer times in training share the unknown id

    def __post_init__(self) -> None:
        if self.c <= 0:
            raise ValueError(f"c must be > 0, got {self.c}")
        for name in ("max_iter", "min_feature_count", "min_word_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class AssertionTrainSettings(TrainSettings):
    model: AssertionFeatures = field(default_factory=AssertionFeatures)
    fit: LinearFit = field(default_factory=LinearFit)


@dataclass(frozen=True)
class RelationTrainSettings(TrainSettings):
    model: RelationConfig = field(default_factory=RelationConfig)
    fit: LinearFit = field(default_factory=LinearFit)


def word_vocabulary(docs: Sequence[Document], min_count: int, always: Sequence[str] = ()) -> Vocabulary:
    """Words seen at least ``min_count`` times in ``docs``, and the ``always`` words in any case."""
    counts = Counter(word_form(t.text) for d in docs for t in tokenize(d.text))
    return Vocabulary(sorted({w for w, n in counts.items() if n >= min_count} | set(always)))


def label_vocabulary(docs: Sequence[Document]) -> Vocabulary:
    return Vocabulary(sorted({m.label for d in docs for m in d.mentions}), reserved=0)


def fit_linear(
    parts: Sequence[tuple[FeatureRows, IntArray]], n_classes: int, fit: LinearFit, seed: int
) -> LinearModel:
    """Fit a multinomial logistic regression on (feature rows, class ids) of several notes."""
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression

    rows, keys, labels = [], [], []
    offset = 0
    for features, y in parts:
        r, k = features.arrays()
        rows.append(r + offset)
        keys.append(k)
        labels.append(y)
        offset += len(y)
    all_rows, all_keys, y_all = np.concatenate(rows), np.concatenate(keys), np.concatenate(labels)
    index = FeatureIndex.fit(all_keys, fit.min_feature_count)
    cols = index.columns(all_keys)
    known = cols >= 0
    x = sp.csr_matrix((np.ones(int(known.sum())), (all_rows[known], cols[known])), shape=(offset, len(index)))
    present = sorted(set(y_all.tolist()))
    model = LogisticRegression(C=fit.c, max_iter=fit.max_iter, random_state=seed).fit(x, y_all)
    # Classes absent from training keep zero weights and a very low bias.
    weights = np.zeros((len(index), n_classes), dtype=np.float32)
    bias = np.full(n_classes, -30.0, dtype=np.float32)
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # scikit-learn stores one row for a binary problem
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weights[:, present] = coef.T
    bias[present] = intercept
    return LinearModel(index, weights, bias)


def assertion_examples(
    docs: Sequence[Document], words: Vocabulary, labels: Vocabulary, spec: AssertionFeatures
) -> list[tuple[FeatureRows, IntArray]]:
    out = []
    cue_words = CueWords.of(words)
    for d in docs:
        note = Note.build(d.text, d.mentions, words, labels)
        y = np.array([ASSERTIONS.index(a) for a in d.assertion_labels], dtype=np.int64)
        out.append((assertion_features(note, spec, cue_words), y))
    return out


def train_assertion(
    docs: Sequence[Document],
    spec: AssertionFeatures,
    fit: LinearFit,
    name: str = "assertion",
    version: str | None = None,
    seed: int = 13,
) -> AssertionClassifier:
    """Fit the assertion classifier on the gold mentions of ``docs``."""
    # The cue lists are always in the vocabulary when the scope features are on, so that a cue word
    # too rare in training for a weight of its own still counts through its kind's templates.
    always = (*CUES, *TERMINATORS) if spec.scope_window else ()
    words, labels = word_vocabulary(docs, fit.min_word_count, always), label_vocabulary(docs)
    linear = fit_linear(assertion_examples(docs, words, labels, spec), len(ASSERTIONS), fit, seed)
    info = ClinicalInfo(
        ASSERTION_KIND, name, version or new_version(), labels.words, list(ASSERTIONS), "assertion"
    )
    return AssertionClassifier(info, spec, words, linear)


def relation_examples(
    docs: Sequence[Document],
    words: Vocabulary,
    labels: Vocabulary,
    spec: RelationConfig,
    compatible: np.ndarray[Any, np.dtype[np.bool_]],
    classes: Sequence[str],
) -> tuple[list[tuple[FeatureRows, IntArray]], Counter[str]]:
    """Feature rows and classes of every candidate pair, and the gold relations no candidate covers."""
    out = []
    missed: Counter[str] = Counter()
    for d in docs:
        note = Note.build(d.text, d.mentions, words, labels)
        a, b = candidate_pairs(note, spec, compatible)
        position = {m: i for i, m in enumerate(d.mentions)}
        gold = {(position[r.head], position[r.tail]): r.type for r in d.relations if r.type in RELATION_TYPES}
        y = np.zeros(len(a), dtype=np.int64)
        covered = set()
        for k, (i, j) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
            if (i, j) in gold:
                y[k] = classes.index(gold[i, j] + ">")
                covered.add((i, j))
            elif (j, i) in gold:
                y[k] = classes.index(gold[j, i] + "<")
                covered.add((j, i))
        missed.update(t for pair, t in gold.items() if pair not in covered)
        out.append((relation_features(note, a, b, spec), y))
    return out, missed


def train_relations(
    docs: Sequence[Document],
    spec: RelationConfig,
    fit: LinearFit,
    name: str = "relations",
    version: str | None = None,
    seed: int = 13,
) -> tuple[RelationExtractor, Counter[str]]:
    """Fit the relation model on the gold mentions and relations of ``docs``; also returns the
    training relations the candidate pruning left out, by type."""
    words, labels = word_vocabulary(docs, fit.min_word_count), label_vocabulary(docs)
    seen = {
        (labels.index[r.head.label], labels.index[r.tail.label])
        for d in docs
        for r in d.relations
        if r.type in RELATION_TYPES
    }
    compatible = compatibility(len(labels), seen)
    classes = relation_classes()
    examples, missed = relation_examples(docs, words, labels, spec, compatible, classes)
    linear = fit_linear(examples, len(classes), fit, seed)
    info = ClinicalInfo(RELATIONS_KIND, name, version or new_version(), labels.words, classes, "relations")
    return RelationExtractor(info, spec, words, linear, compatible), missed


def _card(model: ClinicalModel, metrics: dict[str, Any]) -> str:
    data = metrics["data"]
    lines = [
        f"# {model.name} {model.version}",
        "",
        f"Kind: {model.kind} ({model.task} head; attach it to a tagger with `medner attach`).",
        *(f"- {line}" for line in model.describe()),
        "",
        "## Data",
        f"- {data['corpus']} (CC BY 4.0), {data['split']}: {data['train_docs']} train documents "
        f"({data['train_examples']:,} examples), {data['dev_docs']} dev documents; gold mentions.",
        f"- Entity labels: {len(model.entity_labels)}; classes: {', '.join(model.classes)}.",
        "",
        "## Scores (gold mentions; dev chose the settings, test was not used to choose)",
    ]
    for split in ("dev", "test"):
        scores = metrics.get(split)
        if scores:
            per = ", ".join(f"{n} {v['f1']:.3f}" for n, v in scores["per_class"].items())
            lines.append(
                f"- {split}: macro F1 {scores['macro_f1']:.4f}; micro F1 {scores['micro']['f1']:.4f}; {per}"
            )
    lines += [
        "",
        "## Intended use and limits",
        "Trained on 160 case reports (MACCROBAT2020): expect lower accuracy on other note types. Scores "
        "on predicted mentions are lower (docs/clinical.md). Not a medical device.",
    ]
    return "\n".join(lines) + "\n"


def _finish(
    model: ClinicalModel,
    settings: TrainSettings,
    scores: dict[str, ClassScores],
    data: dict[str, Any],
    seconds: float,
) -> TrainResult:
    metrics: dict[str, Any] = {
        "schema": 1,
        "model": {"kind": model.kind, "name": model.name, "version": model.version},
        "settings": asdict(settings),
        "data": data,
        "fit_seconds": round(seconds, 1),
        **{split: s.to_dict() for split, s in scores.items()},
    }
    model.metrics = metrics
    directory = model.save(Path(settings.run.output_dir) / settings.run.name / model.version)
    (directory / CARD_FILE).write_text(_card(model, metrics), encoding="utf-8")
    log.info("wrote %s", directory)
    return TrainResult(model, directory, metrics)


def _data(train_docs: Sequence[Document], dev_docs: Sequence[Document]) -> dict[str, Any]:
    return {
        "corpus": "MACCROBAT2020",
        "split": "DICE 160/20/20 document split",
        "train_docs": len(train_docs),
        "dev_docs": len(dev_docs),
    }


class _LinearTrainer(StandaloneTrainer):
    """Read the split, fit on train, score dev (and test once, when asked), write the artifact."""

    def fit(self) -> TrainResult:
        s = self.settings
        train_docs, dev_docs, test_docs = read_split(s)
        started = time.monotonic()
        model, data = self._train(train_docs)
        seconds = time.monotonic() - started
        scores = {"dev": self._evaluate(model, dev_docs)}
        if s.run.evaluate_test:
            scores["test"] = self._evaluate(model, test_docs)
        log.info(
            "%s: dev macro F1 %.4f, micro F1 %.4f", self.kind, scores["dev"].macro_f1, scores["dev"].micro.f1
        )
        return _finish(model, s, scores, {**_data(train_docs, dev_docs), **data}, seconds)

    @abstractmethod
    def _train(self, docs: Sequence[Document]) -> tuple[Any, dict[str, Any]]:
        """The fitted model and what metrics.json's ``data`` should add."""

    @abstractmethod
    def _evaluate(self, model: Any, docs: Sequence[Document]) -> ClassScores: ...


@StandaloneTrainer.register("assertion")
class AssertionTrainer(_LinearTrainer):
    settings_class = AssertionTrainSettings
    settings: AssertionTrainSettings

    def _train(self, docs: Sequence[Document]) -> tuple[Any, dict[str, Any]]:
        s = self.settings
        model = train_assertion(docs, s.model, s.fit, s.run.name, s.run.version, s.run.seed)
        return model, {"train_examples": sum(len(d.mentions) for d in docs)}

    def _evaluate(self, model: Any, docs: Sequence[Document]) -> ClassScores:
        return evaluate_assertion(model, docs)


@StandaloneTrainer.register("relations")
class RelationTrainer(_LinearTrainer):
    settings_class = RelationTrainSettings
    settings: RelationTrainSettings

    def _train(self, docs: Sequence[Document]) -> tuple[Any, dict[str, Any]]:
        s = self.settings
        model, missed = train_relations(docs, s.model, s.fit, s.run.name, s.run.version, s.run.seed)
        n = sum(len(d.relations) for d in docs)
        return model, {"train_examples": n, "relations_outside_candidates": dict(missed)}

    def _evaluate(self, model: Any, docs: Sequence[Document]) -> ClassScores:
        return evaluate_relations(model, docs)

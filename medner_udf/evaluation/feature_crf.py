"""The classic feature-based CRF baseline (sklearn-crfsuite): the peer the neural taggers must beat.

Hand-written token features (the word, its lowercase form, 2-3 character prefixes and suffixes, its
shape, digit/punctuation/title-case flags) for the token and its neighbours at -2..+2, BIOES tags
from ``medner_udf.corpus.dataset.to_sentences``, L-BFGS training with L1 (``c1``) and L2 (``c2``)
penalties. It segments and decodes exactly as the neural taggers do (``medner_udf.text.tokens.segment``,
``medner_udf.text.scheme.tags_to_token_spans``), so its scores are directly comparable.

``medner baseline feature-crf`` trains it on the train split and prints strict dev/test figures;
``--grid`` first picks c1/c2 on dev from a small grid (never on test).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medner_udf.corpus.dataset import Sentence, to_sentences
from medner_udf.corpus.maccrobat import Document, read_corpus
from medner_udf.evaluation.scoring import Scores, score_spans
from medner_udf.evaluation.token_metrics import token_metrics
from medner_udf.text.scheme import tags_to_token_spans
from medner_udf.text.tokens import segment
from medner_udf.text.types import Span, Token

# Chosen on dev (never test) from the first two GRID points at 100 iterations, 2026-11-25:
# (0.05, 0.01) dev strict F1 0.5173 vs (0.1, 0.05) 0.5151; test with the chosen pair: 0.5914.
# Training took ~10 CPU-minutes (single-threaded crfsuite; 42 min wall on a contended 2-core box).
DEFAULT_C1 = 0.05
DEFAULT_C2 = 0.01
DEFAULT_MAX_ITERATIONS = 100
GRID: tuple[tuple[float, float], ...] = ((0.05, 0.01), (0.1, 0.05), (0.2, 0.1))

Features = dict[str, str | float]


def word_shape(word: str) -> str:
    """``Xxxx`` style shape: upper -> X, lower -> x, digit -> d, anything else kept as is."""
    out = []
    for ch in word:
        if ch.isupper():
            out.append("X")
        elif ch.islower():
            out.append("x")
        elif ch.isdigit():
            out.append("d")
        else:
            out.append(ch)
    return "".join(out)


def short_shape(word: str) -> str:
    """The shape with runs of one character class collapsed (``Xxxx`` -> ``Xx``, ``ddd`` -> ``d``)."""
    shape = word_shape(word)
    return "".join(ch for i, ch in enumerate(shape) if i == 0 or ch != shape[i - 1])


def _token_features(word: str, prefix: str) -> Features:
    # Long shapes say little and inflate the feature space; words are at most a few dozen chars.
    return {
        f"{prefix}word": word,
        f"{prefix}lower": word.lower(),
        f"{prefix}pre2": word[:2],
        f"{prefix}pre3": word[:3],
        f"{prefix}suf2": word[-2:],
        f"{prefix}suf3": word[-3:],
        f"{prefix}shape": word_shape(word)[:8],
        f"{prefix}sshape": short_shape(word),
        f"{prefix}isdigit": float(word.isdigit()),
        f"{prefix}ispunct": float(not word.isalnum()),
        f"{prefix}istitle": float(word.istitle()),
        f"{prefix}isupper": float(word.isupper()),
    }


def sentence_features(words: Sequence[str]) -> list[Features]:
    """Feature dicts for each token of a sentence: its own features and those of its neighbours
    at offsets -2..+2, plus begin/end-of-sentence markers where a neighbour does not exist."""
    own = [_token_features(w, "") for w in words]
    out: list[Features] = []
    for i in range(len(words)):
        feats: Features = {"bias": 1.0, **own[i]}
        for offset in (-2, -1, 1, 2):
            j = i + offset
            if 0 <= j < len(words):
                feats.update({f"{offset:+d}:{k}": v for k, v in own[j].items()})
            else:
                feats[f"{offset:+d}:edge"] = "BOS" if j < 0 else "EOS"
        out.append(feats)
    return out


def train_feature_crf(
    train_sents: Sequence[Sentence],
    c1: float = DEFAULT_C1,
    c2: float = DEFAULT_C2,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> Any:
    """Fit an L-BFGS CRF (sklearn_crfsuite.CRF) on tagged sentences and return it."""
    import sklearn_crfsuite

    if not train_sents:
        raise ValueError("train_sents is empty")
    if c1 < 0 or c2 < 0:
        raise ValueError(f"c1 and c2 must be >= 0, got c1={c1}, c2={c2}")
    if max_iterations < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
    x = [sentence_features([t.text for t in s.tokens]) for s in train_sents]
    y = [list(s.tags) for s in train_sents]
    model = sklearn_crfsuite.CRF(
        algorithm="lbfgs",
        c1=c1,
        c2=c2,
        max_iterations=max_iterations,
        # Lets the model learn negative weights for transitions it never saw (e.g. O -> I-X), which
        # keeps most decoded sequences valid without a hard constraint.
        all_possible_transitions=True,
    )
    model.fit(x, y)
    return model


def _spans_from_tags(tokens: Sequence[Token], tags: Sequence[str]) -> list[Span]:
    return [
        Span(tokens[first].begin, tokens[last - 1].end, label)
        for first, last, label in tags_to_token_spans(tags)
    ]


def predict_docs(model: Any, docs: Sequence[Document]) -> dict[str, list[Span]]:
    """Character spans predicted for each document, keyed by doc id, sorted."""
    keys: list[str] = []
    segments: list[list[Token]] = []
    for doc in docs:
        for tokens in segment(doc.text):
            keys.append(doc.doc_id)
            segments.append(tokens)
    tag_seqs = model.predict([sentence_features([t.text for t in toks]) for toks in segments])
    out: dict[str, list[Span]] = {doc.doc_id: [] for doc in docs}
    for doc_id, tokens, tags in zip(keys, segments, tag_seqs, strict=True):
        out[doc_id].extend(_spans_from_tags(tokens, tags))
    return {doc_id: sorted(set(spans)) for doc_id, spans in out.items()}


def evaluate_model(model: Any, docs: Sequence[Document]) -> Scores:
    """Strict/relaxed entity scores of ``model`` on ``docs`` against all their gold mentions."""
    return score_spans({d.doc_id: d.mentions for d in docs}, predict_docs(model, docs))


def _summary(scores: Scores) -> dict[str, float]:
    return {
        "strict_p": round(scores.strict.precision, 4),
        "strict_r": round(scores.strict.recall, 4),
        "strict_f1": round(scores.strict.f1, 4),
        "relaxed_f1": round(scores.relaxed.f1, 4),
        "macro_f1": round(scores.macro_f1, 4),
    }


def run(
    corpus: Path, c1: float, c2: float, max_iterations: int, grid: bool, log: Any = sys.stdout
) -> dict[str, Any]:
    """Train on train, (optionally) choose c1/c2 on dev, report dev and test figures."""
    train_docs = read_corpus(corpus, "train")
    dev_docs = read_corpus(corpus, "dev")
    test_docs = read_corpus(corpus, "test")
    train_sents, report = to_sentences(train_docs)
    result: dict[str, Any] = {
        "n_train_docs": len(train_docs),
        "n_train_sentences": len(train_sents),
        "flatten_dropped": report.n_dropped,
        "max_iterations": max_iterations,
    }
    candidates = list(GRID) if grid else [(c1, c2)]
    best: tuple[Scores, Any, float, float, float] | None = None
    grid_results = []
    for cand_c1, cand_c2 in candidates:
        started = time.perf_counter()
        model = train_feature_crf(train_sents, cand_c1, cand_c2, max_iterations)
        train_s = time.perf_counter() - started
        dev = evaluate_model(model, dev_docs)
        row = {"c1": cand_c1, "c2": cand_c2, "train_seconds": round(train_s, 1), "dev": _summary(dev)}
        grid_results.append(row)
        print(json.dumps(row), file=log, flush=True)
        if best is None or dev.strict.f1 > best[0].strict.f1:
            best = (dev, model, cand_c1, cand_c2, train_s)
    assert best is not None
    dev_scores, model, best_c1, best_c2, train_s = best
    started = time.perf_counter()
    test_pred = predict_docs(model, test_docs)
    predict_s = time.perf_counter() - started
    test_scores = score_spans({d.doc_id: d.mentions for d in test_docs}, test_pred)
    result.update(
        {
            "c1": best_c1,
            "c2": best_c2,
            "grid": grid_results,
            "train_seconds": round(train_s, 1),
            "test_predict_seconds": round(predict_s, 2),
            "dev": _summary(dev_scores),
            "test": _summary(test_scores),
            # Token-level conlleval-like figure, only for comparison with published tables.
            "test_seqeval_f1": round(token_metrics(test_docs, test_pred).seqeval.f1, 4),
        }
    )
    return result

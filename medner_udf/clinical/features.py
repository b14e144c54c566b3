"""What the assertion and relation models share: notes as arrays, integer feature keys, and a sparse
linear model over them.

Both models are linear over sparse indicator features (docs/clinical.md says why: on MACCROBAT they
match a small neural span classifier at a fraction of the cost). Features are built per note with
numpy, never per mention in Python: every template packs its fields (a template id, label ids,
word ids, distance buckets) into one int64 *key*, and a ``FeatureIndex`` (the sorted keys seen in
training) turns keys into weight rows by binary search; unseen keys drop out. So inference is a few
vectorised gathers per note, and the artifact is three arrays and a word list, nothing pickled.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from medner_udf.text.tokens import tokenize

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]

PAD, UNK = 0, 1
_TEMPLATE_SHIFT = 56  # bits 56-62 hold the template id; fields fill bits 0-55
_DIGITS = re.compile(r"\d")
_LINE_BREAK = re.compile(r"\n|\r")
# A sentence stop: . ! or ? then spaces and a capital letter on the same line ("... fever. CT showed").
_SENTENCE_STOP = re.compile(r"[.!?][ \t]+(?=[A-Z])")


class Mention(Protocol):
    """Anything with a labelled character span: a tagger's ``Entity`` or a gold ``Span``."""

    @property
    def begin(self) -> int: ...

    @property
    def end(self) -> int: ...

    @property
    def label(self) -> str: ...


def word_form(token: str) -> str:
    """The vocabulary form of a token: lowercased, digits folded to 0 (values rarely matter, shapes do)."""
    return _DIGITS.sub("0", token.lower())


class Vocabulary:
    """Ids of words (PAD 0, UNK 1, then ``words``) or of labels (no PAD/UNK when ``reserved`` is 0)."""

    def __init__(self, words: Sequence[str], reserved: int = 2) -> None:
        self.words = list(words)
        self.reserved = reserved
        self.index = {w: i + reserved for i, w in enumerate(self.words)}
        if len(self.index) != len(self.words):
            raise ValueError("vocabulary entries must be unique")

    def __len__(self) -> int:
        return len(self.words) + self.reserved

    def ids(self, items: Iterable[str]) -> IntArray:
        get, default = self.index.get, UNK if self.reserved else -1
        return np.fromiter((get(x, default) for x in items), dtype=np.int64)


@dataclass
class Note:
    """One note's tokens and mentions as arrays (token ranges end exclusive).

    ``sentence`` numbers the token's sentence: a new one starts at every line break (MACCROBAT has
    one sentence per line) and after ``.``/``!``/``?`` followed by a capitalised word on the same line.
    """

    words: IntArray  # (n_tokens,) word ids
    sentence: IntArray  # (n_tokens,)
    first: IntArray  # (n_mentions,) first token of each mention
    last: IntArray  # (n_mentions,) one past its last token
    labels: IntArray  # (n_mentions,) label ids (-1: a label the model does not know)

    @property
    def n_mentions(self) -> int:
        return len(self.first)

    @classmethod
    def build(cls, text: str, mentions: Sequence[Mention], words: Vocabulary, labels: Vocabulary) -> Note:
        tokens = tokenize(text)
        begins = np.fromiter((t.begin for t in tokens), dtype=np.int64, count=len(tokens))
        ends = np.fromiter((t.end for t in tokens), dtype=np.int64, count=len(tokens))
        word_ids = words.ids(word_form(t.text) for t in tokens)
        breaks = np.fromiter((m.start() for m in _LINE_BREAK.finditer(text)), dtype=np.int64)
        stops = np.fromiter((m.end() for m in _SENTENCE_STOP.finditer(text)), dtype=np.int64)
        # Token i starts a sentence when a line break or a sentence stop lies between it and token i-1.
        new_sentence = np.zeros(len(tokens), dtype=np.int64)
        if len(tokens) > 1:
            line = np.searchsorted(breaks, begins)
            after_stop = np.searchsorted(stops, begins, side="right")
            new_sentence[1:] = (line[1:] != line[:-1]) | (after_stop[1:] != after_stop[:-1])
        m_begin = np.fromiter((m.begin for m in mentions), dtype=np.int64, count=len(mentions))
        m_end = np.fromiter((m.end for m in mentions), dtype=np.int64, count=len(mentions))
        # A mention covers the tokens it overlaps (partial tokens included), at least one.
        first = np.searchsorted(ends, m_begin, side="right")
        last = np.maximum(np.searchsorted(begins, m_end, side="left"), first + 1)
        first = np.minimum(first, max(len(tokens) - 1, 0))
        last = np.minimum(last, len(tokens))
        return cls(
            words=word_ids,
            sentence=np.cumsum(new_sentence),
            first=first,
            last=last,
            labels=labels.ids(m.label for m in mentions),
        )


def bucket(values: IntArray, edges: Sequence[int]) -> IntArray:
    """Index of the bucket each value falls in: ``edges`` are the inclusive upper ends of all but the
    last bucket (``[0, 1, 2, 4, 8]`` -> 0 | 1 | 2 | 3-4 | 5-8 | 9+)."""
    return np.searchsorted(np.asarray(edges, dtype=np.int64), values, side="left").astype(np.int64)


def compose(template: int, *fields: tuple[IntArray | int, int]) -> IntArray:
    """One int64 key per row from a template id and (values, bit width) fields (values >= -1; -1,
    an unknown label, maps to the field's all-ones value)."""
    if not 0 <= template < 128:
        raise ValueError(f"template id must be in [0, 128), got {template}")
    shift = 0
    key: IntArray | int = 0
    for values, bits in fields:
        mask = (1 << bits) - 1
        key = key | ((np.asarray(values, dtype=np.int64) & mask) << shift)
        shift += bits
    if shift > _TEMPLATE_SHIFT:
        raise ValueError(f"fields take {shift} bits; at most {_TEMPLATE_SHIFT} fit beside the template")
    return np.asarray(key, dtype=np.int64) | (np.int64(template) << _TEMPLATE_SHIFT)


class FeatureRows:
    """The features of ``n_rows`` rows (mentions or pairs), template by template: each template adds
    a block of keys of shape (n_rows, k) with a mask of the ones that exist (a window cut short by
    the sentence end, a gap shorter than the template looks at). Blocks keep scoring dense: no
    scatter, one gather and a sum per row."""

    def __init__(self, n_rows: int) -> None:
        self.n_rows = n_rows
        self._keys: list[IntArray] = []
        self._valid: list[BoolArray] = []

    def add(self, keys: IntArray, valid: BoolArray | None = None) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if keys.ndim == 1:
            keys = keys[:, None]
        keys = np.broadcast_to(keys, (self.n_rows, keys.shape[1]))
        mask = np.ones(keys.shape, dtype=bool) if valid is None else np.broadcast_to(valid, keys.shape)
        self._keys.append(keys)
        self._valid.append(mask)

    def block(self) -> tuple[IntArray, BoolArray]:
        """All templates side by side: keys and mask of shape (n_rows, total k)."""
        if not self._keys:
            return np.zeros((self.n_rows, 0), dtype=np.int64), np.zeros((self.n_rows, 0), dtype=bool)
        return np.concatenate(self._keys, axis=1), np.concatenate(self._valid, axis=1)

    def arrays(self) -> tuple[IntArray, IntArray]:
        """(row, key) pairs of the features that exist (a sparse matrix's coordinates)."""
        keys, valid = self.block()
        rows = np.broadcast_to(np.arange(self.n_rows, dtype=np.int64)[:, None], keys.shape)
        return rows[valid], keys[valid]


class FeatureIndex:
    """Known feature keys (sorted) -> weight rows."""

    def __init__(self, keys: IntArray) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) > 1 and not np.all(keys[1:] > keys[:-1]):
            raise ValueError("feature keys must be sorted and unique")
        self.keys = keys

    @classmethod
    def fit(cls, keys: IntArray, min_count: int = 1) -> FeatureIndex:
        unique, counts = np.unique(keys, return_counts=True)
        return cls(unique[counts >= min_count])

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self, keys: IntArray) -> IntArray:
        """The column of each key, -1 for a key training never kept."""
        if not len(self.keys):
            return np.full(len(keys), -1, dtype=np.int64)
        pos = np.searchsorted(self.keys, keys)
        clipped = np.minimum(pos, len(self.keys) - 1)
        return np.where(self.keys[clipped] == keys, clipped, -1).astype(np.int64)


def softmax(scores: npt.NDArray[np.floating]) -> FloatArray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    out: FloatArray = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
    return out


@dataclass
class LinearModel:
    """Multinomial logistic regression over indicator features: ``softmax(x @ weights + bias)``."""

    index: FeatureIndex
    weights: FloatArray  # (n_features, n_classes)
    bias: FloatArray  # (n_classes,)

    def __post_init__(self) -> None:
        if self.weights.shape != (len(self.index), len(self.bias)):
            raise ValueError(
                f"weights have shape {self.weights.shape}, expected ({len(self.index)}, {len(self.bias)})"
            )

    def probabilities(self, features: FeatureRows) -> FloatArray:
        """(n_rows, n_classes) class probabilities of the rows of ``features``."""
        keys, valid = features.block()
        n_rows = keys.shape[0]
        # Row-major order keeps each row's features together, so per-row sums are one reduceat over
        # the known features' weights (no scatter).
        row_of = np.repeat(np.arange(n_rows, dtype=np.int64), valid.sum(axis=1))
        cols = self.index.columns(keys[valid])
        known = cols >= 0
        row_of, cols = row_of[known], cols[known]
        scores = np.zeros((n_rows, len(self.bias)), dtype=np.float64)
        if len(cols):
            starts = np.flatnonzero(np.r_[True, row_of[1:] != row_of[:-1]])
            scores[row_of[starts]] = np.add.reduceat(self.weights[cols], starts, axis=0, dtype=np.float64)
        return softmax(scores + self.bias)

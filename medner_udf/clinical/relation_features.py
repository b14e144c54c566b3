"""Candidate mention pairs and their features for the relation model.

Candidates: mentions in text order; each mention is paired with the next mentions after it whose
label pair (in either order) was seen in a training relation, at most ``max_candidates`` of them,
looking at most ``scan`` mentions ahead and ``max_sentence_gap`` sentences away. So a note with N
mentions yields at most N x ``max_candidates`` pairs, however long it is (the 10k-line note test).

A pair (a, b), a first in the text, is classified once into NONE or a relation type *with its
direction* (``MODIFY>``: a is the head, b the tail; ``MODIFY<``: b is the head), so direction is
scored, not assumed. Features: the label pair, crossed with the distance in mentions, tokens and
sentences, with how many mentions of either label lie between (the "nearest compatible mention"
signal) and with how the spans nest; the words and mention labels between; the words just outside
the pair; each mention's last word with the other's label.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medner_udf.clinical.features import FeatureRows, IntArray, Note, bucket, compose

WORD_BITS, LABEL_BITS, BUCKET_BITS = 20, 7, 4
_RANK_EDGES = (1, 2, 3, 4, 6, 9, 14, 20)
_TOKEN_EDGES = (0, 1, 2, 3, 5, 8, 12, 20, 35)
_COUNT_EDGES = (0, 1, 2)
_SENTENCE_EDGES = (0, 1, 2)


@dataclass(frozen=True)
class RelationConfig:
    """Candidate pruning, feature sizes and decoding (stored in the artifact's config)."""

    max_candidates: int = 8  # pairs per mention (with later mentions), at most
    scan: int = 60  # mentions looked at after each mention, at most
    max_sentence_gap: int = 3
    between_words: int = 3  # words between the pair that become features (the nearest to each end)
    between_labels: int = 6
    # Decoding (chosen on dev, docs/clinical.md): a pair gets its best relation class when
    # P(NONE) < none_threshold; and each mention's best MODIFY head is kept when its probability
    # reaches modify_threshold (95% of modifiers modify exactly one mention).
    none_threshold: float = 0.6
    modify_threshold: float = 0.3

    def __post_init__(self) -> None:
        for name in ("none_threshold", "modify_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("max_candidates", "scan", "between_words", "between_labels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_sentence_gap < 0:
            raise ValueError(f"max_sentence_gap must be >= 0, got {self.max_sentence_gap}")


def text_order(note: Note) -> IntArray:
    """Mention indices sorted by (first token, last token, label)."""
    return np.lexsort((note.labels, note.last, note.first)).astype(np.int64)


def candidate_pairs(
    note: Note, spec: RelationConfig, compatible: npt.NDArray[np.bool_]
) -> tuple[IntArray, IntArray]:
    """(a, b) mention indices of the candidate pairs, a before b in text order.

    ``compatible[la, lb]`` says whether labels la and lb may be related (symmetric); unknown labels
    (-1) are never compatible.
    """
    order = text_order(note)
    n = len(order)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    step = np.arange(1, min(spec.scan, n - 1) + 1, dtype=np.int64)[None, :]
    i = np.arange(n, dtype=np.int64)[:, None]
    j = i + step  # (n, scan) positions in text order
    inside = j < n
    jc = np.minimum(j, n - 1)
    a, b = order[i], order[jc]
    la, lb = note.labels[a], note.labels[b]
    known = (la >= 0) & (lb >= 0)
    ok = inside & known & compatible[np.maximum(la, 0), np.maximum(lb, 0)]
    gap = note.sentence[note.first[b]] - note.sentence[note.first[a]]
    ok &= gap <= spec.max_sentence_gap
    ok &= np.cumsum(ok, axis=1) <= spec.max_candidates
    a_idx, b_idx = np.broadcast_to(a, ok.shape)[ok], b[ok]
    return a_idx.astype(np.int64), b_idx.astype(np.int64)


def compatibility(n_labels: int, pairs: Collection[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    """The symmetric label-pair matrix of ``candidate_pairs`` from the (head, tail) label ids seen."""
    out = np.zeros((n_labels, n_labels), dtype=bool)
    for x, y in pairs:
        out[x, y] = out[y, x] = True
    return out


def relation_features(note: Note, a: IntArray, b: IntArray, spec: RelationConfig) -> FeatureRows:
    """One feature row per candidate pair (a[k], b[k])."""
    out = FeatureRows(len(a))
    p = len(a)
    if p == 0:
        return out
    words, labels = note.words, note.labels
    n_tokens = len(words)
    la, lb = labels[a][:, None], labels[b][:, None]
    pair = (la, LABEL_BITS), (lb, LABEL_BITS)
    out.add(compose(1, *pair))

    order = text_order(note)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order), dtype=np.int64)
    rank_gap = (rank[b] - rank[a])[:, None]
    out.add(compose(2, *pair, (bucket(rank_gap, _RANK_EDGES), BUCKET_BITS)))
    token_gap = np.maximum(note.first[b] - note.last[a], -1)[:, None]
    out.add(compose(3, *pair, (bucket(token_gap + 1, _TOKEN_EDGES), BUCKET_BITS)))
    sentence_gap = (note.sentence[note.first[b]] - note.sentence[note.first[a]])[:, None]
    out.add(compose(4, *pair, (bucket(sentence_gap, _SENTENCE_EDGES), BUCKET_BITS)))

    # Mentions of each end's label strictly between the two (in text order): 0 means "nearest".
    n_labels = int(labels.max()) + 2 if len(labels) else 1
    ordered_labels = labels[order]
    onehot = np.zeros((len(order) + 1, n_labels), dtype=np.int64)
    onehot[np.arange(1, len(order) + 1), ordered_labels] = 1  # label -1 lands in the last column
    cum = np.cumsum(onehot, axis=0)  # cum[k, l]: mentions of label l among the first k in order
    lo, hi = rank[a] + 1, rank[b]
    between_b = cum[hi, labels[b]] - cum[lo, labels[b]]
    between_a = cum[hi, labels[a]] - cum[lo, labels[a]]
    out.add(compose(5, *pair, (bucket(between_b[:, None], _COUNT_EDGES), 2), (0, 1)))
    out.add(compose(5, *pair, (bucket(between_a[:, None], _COUNT_EDGES), 2), (1, 1)))

    # How the spans sit: b inside a, a inside b, overlapping, adjacent or apart.
    fa, ea, fb, eb = note.first[a], note.last[a], note.first[b], note.last[b]
    nesting = np.select(
        [(fb >= fa) & (eb <= ea), (fa >= fb) & (ea <= eb), fb < ea, fb == ea],
        [0, 1, 2, 3],
        default=4,
    )[:, None]
    out.add(compose(6, *pair, (nesting, 3)))

    # Words between: the nearest ``between_words`` to each end (all of them when the gap is short).
    k = np.arange(spec.between_words, dtype=np.int64)[None, :]
    from_a = ea[:, None] + k
    from_b = fb[:, None] - 1 - k
    for template, pos in ((7, from_a), (8, from_b)):
        valid = (pos < fb[:, None]) & (pos >= ea[:, None]) & (pos >= 0) & (pos < n_tokens)
        w = words[np.clip(pos, 0, max(n_tokens - 1, 0))]
        out.add(compose(template, (w, WORD_BITS)), valid)
        out.add(compose(template + 2, *pair, (w, WORD_BITS)), valid & (k < 3))
    first_between = words[np.clip(ea, 0, n_tokens - 1)][:, None]
    out.add(compose(11, *pair, (first_between, WORD_BITS)), (fb > ea)[:, None])
    last_between = words[np.clip(fb - 1, 0, n_tokens - 1)][:, None]
    out.add(compose(12, *pair, (last_between, WORD_BITS)), (fb > ea)[:, None])

    # Labels of the mentions between (the nearest ones to a).
    kk = np.arange(1, spec.between_labels + 1, dtype=np.int64)[None, :]
    mid = rank[a][:, None] + kk
    valid = mid < rank[b][:, None]
    mid_labels = ordered_labels[np.minimum(mid, len(order) - 1)]
    out.add(compose(13, *pair, (mid_labels, LABEL_BITS)), valid)

    # Words just outside the pair, and each mention's last word with the other's label.
    before = words[np.maximum(fa - 1, 0)][:, None]
    after = words[np.minimum(eb, n_tokens - 1)][:, None]
    out.add(compose(14, (la, LABEL_BITS), (before, WORD_BITS)), (fa > 0)[:, None])
    out.add(compose(15, (lb, LABEL_BITS), (after, WORD_BITS)), (eb < n_tokens)[:, None])
    out.add(compose(16, (lb, LABEL_BITS), (words[ea - 1][:, None], WORD_BITS), (0, 1)))
    out.add(compose(16, (la, LABEL_BITS), (words[eb - 1][:, None], WORD_BITS), (1, 1)))
    return out

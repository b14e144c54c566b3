"""Features of a mention's assertion status: its label and words, and the words around it.

Negation and hedging cues sit close to the mention in its sentence ("no fever", "denied chest pain",
"pneumonia was ruled out", "possible pneumonia"), so the templates are words of a window on each side
(as a bag and by distance), bigrams on the left, the mention's own words ("afebrile",
"unremarkable") and the sentence's first word, some crossed with the mention's label. Windows stop at
the sentence boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medner_udf.clinical.features import BoolArray, FeatureRows, IntArray, Note, bucket, compose

WORD_BITS, LABEL_BITS, DIST_BITS = 20, 7, 4
_DISTANCE_EDGES = (1, 2, 3, 5, 8)
_MENTION_WORDS = 6  # a mention's first words that become features


@dataclass(frozen=True)
class AssertionFeatures:
    """The feature templates' sizes (stored in the artifact's config)."""

    left_window: int = 8
    right_window: int = 5
    label_window: int = 3  # left words also crossed with the mention's label, this close

    def __post_init__(self) -> None:
        for name in ("left_window", "right_window", "label_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _window(note: Note, anchor: IntArray, size: int, step: int) -> tuple[IntArray, IntArray, BoolArray]:
    """(positions, distances, valid) of ``size`` tokens from ``anchor`` in direction ``step``,
    inside the anchor's sentence; arrays of shape (n_mentions, size)."""
    distance = np.arange(1, size + 1, dtype=np.int64)[None, :]
    pos = anchor[:, None] + step * distance
    n = len(note.words)
    inside = (pos >= 0) & (pos < n)
    clipped = np.clip(pos, 0, max(n - 1, 0))
    valid = inside & (note.sentence[clipped] == note.sentence[np.clip(anchor, 0, max(n - 1, 0))][:, None])
    return clipped, np.broadcast_to(distance, pos.shape), valid


def assertion_features(note: Note, spec: AssertionFeatures) -> FeatureRows:
    """One feature row per mention of ``note``."""
    out = FeatureRows(note.n_mentions)
    m = note.n_mentions
    if m == 0 or len(note.words) == 0:
        return out
    label = note.labels[:, None]
    words = note.words
    out.add(compose(1, (label, LABEL_BITS)))

    left, left_dist, left_ok = _window(note, note.first, spec.left_window, -1)
    right, right_dist, right_ok = _window(note, note.last - 1, spec.right_window, +1)
    out.add(compose(2, (words[left], WORD_BITS)), left_ok)
    out.add(compose(3, (words[left], WORD_BITS), (bucket(left_dist, _DISTANCE_EDGES), DIST_BITS)), left_ok)
    out.add(compose(4, (words[right], WORD_BITS)), right_ok)
    out.add(
        compose(5, (words[right], WORD_BITS), (bucket(right_dist, _DISTANCE_EDGES), DIST_BITS)),
        right_ok,
    )
    # Left bigrams (w[-k-1], w[-k]): "negative for", "ruled out", "no evidence".
    bigram_ok = left_ok[:, 1:] & left_ok[:, :-1]
    out.add(compose(6, (words[left[:, 1:]], WORD_BITS), (words[left[:, :-1]], WORD_BITS)), bigram_ok)
    right_bigram_ok = right_ok[:, 1:] & right_ok[:, :-1]
    out.add(
        compose(7, (words[right[:, :-1]], WORD_BITS), (words[right[:, 1:]], WORD_BITS)),
        right_bigram_ok,
    )
    near = spec.label_window
    out.add(compose(8, (words[left[:, :near]], WORD_BITS), (label, LABEL_BITS)), left_ok[:, :near])
    # The mention's own words, and its first word with its label.
    inside = note.first[:, None] + np.arange(_MENTION_WORDS, dtype=np.int64)[None, :]
    inside_ok = inside < note.last[:, None]
    inside = np.minimum(inside, len(words) - 1)
    out.add(compose(9, (words[inside], WORD_BITS)), inside_ok)
    out.add(compose(10, (words[note.first][:, None], WORD_BITS), (label, LABEL_BITS)))
    # The sentence's first word ("No", "Negative", "Possible") and whether the mention starts it.
    starts = np.searchsorted(note.sentence, note.sentence[note.first], side="left")
    at_start = (note.first == starts).astype(np.int64)[:, None]
    out.add(compose(11, (words[starts][:, None], WORD_BITS), (at_start, 1)))
    return out

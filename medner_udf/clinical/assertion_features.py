"""Features of a mention's assertion status: its label and words, and the words around it.

Negation and hedging cues sit close to the mention in its sentence ("no fever", "denied chest pain",
"pneumonia was ruled out", "possible pneumonia"), so the templates are words of a window on each side
(as a bag and by distance), bigrams on the left, the mention's own words ("afebrile",
"unremarkable") and the sentence's first word, some crossed with the mention's label. Windows stop at
the sentence boundary.

With ``scope_window`` > 0 (feature set 2; 0 is the first feature set, which artifacts written before
it carry implicitly), NegEx-style *cue and scope* templates are added: the nearest cue word
(``CUES``: negation, resolution and hedging words) on each side of the mention inside its sentence,
with whether a scope terminator (``TERMINATORS``: "but", "however", "which", ";", ...) lies between,
crossed with its distance, the number of mentions between (a cue heads a list: "no fever, chills or
night sweats"), the mention's label, and the word after the cue (pseudo-negations: "no change", "not
only"). A cue far from the mention, in a list, still reaches it; a cue behind a terminator is told
apart. The model learns each cue's weight; the lists only say which words are looked for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medner_udf.clinical.features import (
    UNK,
    BoolArray,
    FeatureRows,
    IntArray,
    Note,
    Vocabulary,
    bucket,
    compose,
)

WORD_BITS, LABEL_BITS, DIST_BITS = 20, 7, 4
_DISTANCE_EDGES = (1, 2, 3, 5, 8)
_SCOPE_EDGES = (1, 2, 3, 5, 8, 12, 20)
_BETWEEN_EDGES = (0, 1, 2, 4)  # mentions between a cue and the mention
_MENTION_WORDS = 6  # a mention's first words that become features

# Words that may open (or, after the mention, close) a negated or hedged scope, as word forms
# (lowercased). Resolution and cessation words are cues because MACCROBAT marks events that stopped
# or went away as NEG ("the hematemesis ceased", "withdrawal of vasoactive drugs"); they more often
# follow the mention than precede it.
NEGATION_CUES = (
    "no", "not", "without", "denied", "denies", "deny", "denying", "negative", "free", "absence",
    "absent", "neither", "nor", "none", "never", "lack", "lacked", "lacking", "lacks", "excluded",
    "exclude", "excluding", "ruled", "unremarkable", "nothing", "failed", "refused", "declined",
    "avoided",
)  # fmt: skip
RESOLUTION_CUES = (
    "resolved", "resolution", "disappeared", "disappearance", "relieved", "relief", "subsided",
    "ceased", "cessation", "stopped", "discontinued", "discontinuation", "withdrawn", "withdrawal",
    "withdrew", "weaned", "normalized", "normalised", "normalization", "regressed", "regression",
    "remission", "cleared", "vanished", "removal", "removed", "eliminated", "ameliorated",
    "alleviated", "alleviating", "abated",
)  # fmt: skip
HEDGE_CUES = (
    "possible", "possibly", "probable", "probably", "suspected", "suspicion", "suspect",
    "suspicious", "likely", "unlikely", "may", "might", "could", "suggestive", "suggesting",
    "suggested", "suggests", "differential", "questionable", "presumed", "presumptive",
    "presumably", "doubtful", "uncertain", "unclear", "concern", "concerning", "consider",
    "considered", "rule", "if", "whether", "risk", "prevent", "prevention", "prophylaxis",
    "prophylactic", "versus", "vs", "?",
)  # fmt: skip
CUES = NEGATION_CUES + RESOLUTION_CUES + HEDGE_CUES
# Words that end a cue's scope (NegEx's terminators, and clause punctuation).
TERMINATORS = (
    "but", "however", "although", "though", "except", "apart", "aside", "yet", "whereas", "while",
    "which", "who", "whom", "whose", "because", "since", "nevertheless", "despite", ";", ":",
)  # fmt: skip


@dataclass(frozen=True)
class AssertionFeatures:
    """The feature templates' sizes (stored in the artifact's config)."""

    left_window: int = 8
    right_window: int = 5
    label_window: int = 3  # left words also crossed with the mention's label, this close
    # Cue and scope templates: how far (tokens, inside the sentence) a cue is looked for on each
    # side; 0 turns them off (feature set 1, the default of artifacts that predate them).
    scope_window: int = 0

    def __post_init__(self) -> None:
        for name in ("left_window", "right_window", "label_window"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.scope_window < 0:
            raise ValueError(f"scope_window must be >= 0 (0: off), got {self.scope_window}")


NOT_A_CUE, NEGATION, HEDGE, TERMINATOR = 0, 1, 2, 3


@dataclass(frozen=True)
class CueWords:
    """What each word id of one model's vocabulary is for the scope templates (``NOT_A_CUE``,
    ``NEGATION`` (negation and resolution cues), ``HEDGE`` or ``TERMINATOR``): a lookup table
    built once per model, so a note's cues are one gather."""

    kind: npt.NDArray[np.int8]  # (vocabulary size,)

    @classmethod
    def of(cls, words: Vocabulary) -> CueWords:
        kind = np.zeros(len(words), dtype=np.int8)
        for forms, value in (
            (NEGATION_CUES + RESOLUTION_CUES, NEGATION),
            (HEDGE_CUES, HEDGE),
            (TERMINATORS, TERMINATOR),
        ):
            ids = words.ids(forms)
            kind[ids[ids > UNK]] = value
        return cls(kind)


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


def _last_at_or_before(flags: BoolArray) -> IntArray:
    """For each position, the last position <= it where ``flags`` holds (-1: none)."""
    positions = np.where(flags, np.arange(len(flags), dtype=np.int64), -1)
    return np.maximum.accumulate(positions) if len(flags) else positions


def _first_at_or_after(flags: BoolArray) -> IntArray:
    """For each position, the first position >= it where ``flags`` holds (n: none)."""
    n = len(flags)
    positions = np.where(flags, np.arange(n, dtype=np.int64), n)
    return np.minimum.accumulate(positions[::-1])[::-1] if n else positions


def _scope_features(out: FeatureRows, note: Note, spec: AssertionFeatures, cue_words: CueWords) -> None:
    """The nearest cue left of the mention and right of it, inside the sentence and the scope window
    (templates 12-19, both sides at once: arrays of shape (n_mentions, 2); the module doc says why)."""
    words, n = note.words, len(note.words)
    word_kind = cue_words.kind[words]  # shape: (n_tokens,)
    is_cue = (word_kind == NEGATION) | (word_kind == HEDGE)
    terms = np.cumsum(word_kind == TERMINATOR, dtype=np.int64)  # terminators up to each token
    first, last = note.first, note.last - 1  # the mention's first and last token
    before, after = np.maximum(first - 1, 0), np.minimum(last + 1, n - 1)
    # shape: (n_mentions, 2): column 0 the last cue before the mention, column 1 the first after it.
    cue = np.stack(
        [
            np.where(first > 0, _last_at_or_before(is_cue)[before], -1),
            np.where(last + 1 < n, _first_at_or_after(is_cue)[after], n),
        ],
        axis=1,
    )
    safe = np.clip(cue, 0, n - 1)
    distance = np.abs(safe - np.stack([first, last], axis=1))
    ok = (
        (cue >= 0)
        & (cue < n)
        & (note.sentence[safe] == note.sentence[first][:, None])
        & (distance <= spec.scope_window)
    )
    if not ok.any():
        return
    # A terminator strictly between the cue and the mention blocks the scope; mentions starting
    # strictly between them are counted (a cue heading a list).
    inner_lo = np.stack([safe[:, 0], last], axis=1)  # the exclusive ends of the gap, low side
    inner_hi = np.stack([first, safe[:, 1]], axis=1)  # and high side
    blocked = (terms[np.maximum(inner_hi - 1, 0)] - terms[inner_lo]) > 0
    starts = np.sort(first)
    between = np.searchsorted(starts, inner_hi) - np.searchsorted(starts, inner_lo, side="right")
    side = (np.broadcast_to(np.array([0, 1], dtype=np.int64), cue.shape), 1)
    cue_word = (words[safe], WORD_BITS)
    kind = ((word_kind[safe] == HEDGE).astype(np.int64), 1)
    flag = (blocked.astype(np.int64), 1)
    dist = (bucket(distance, _SCOPE_EDGES), DIST_BITS)
    n_between = (bucket(np.maximum(between, 0), _BETWEEN_EDGES), DIST_BITS)
    label = (np.broadcast_to(note.labels[:, None], cue.shape), LABEL_BITS)
    next_word = (words[np.minimum(safe + 1, n - 1)], WORD_BITS)
    out.add(compose(12, side, cue_word, flag), ok)
    out.add(compose(13, side, cue_word, flag, dist), ok)
    out.add(compose(14, side, cue_word, flag, n_between), ok)
    out.add(compose(15, side, cue_word, flag, label), ok)
    out.add(compose(16, side, cue_word, next_word), ok)  # pseudo-negations: "no change", "not only"
    # The same by the cue's kind (negation or resolution: 0, hedge: 1), so that rare cues share
    # what common ones learn (resolution words as a third kind measured 0.02 lower on dev).
    out.add(compose(17, side, kind, flag, dist), ok)
    out.add(compose(18, side, kind, flag, n_between), ok)
    out.add(compose(19, side, kind, flag, label), ok)


def assertion_features(note: Note, spec: AssertionFeatures, cue_words: CueWords | None = None) -> FeatureRows:
    """One feature row per mention of ``note`` (``cue_words`` is needed when ``spec.scope_window``)."""
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
    if spec.scope_window:
        if cue_words is None:
            raise ValueError("scope_window is set: the cue words of the model's vocabulary are needed")
        _scope_features(out, note, spec, cue_words)
    return out

"""Offset-keeping tokenisation and segmentation of raw notes.

Nothing here normalises the note: every token is a slice of the original string, so character
offsets computed from tokens always index the note the caller passed in (the offsets contract of
the entities table, docs/extraction.md, "Tables").

Tokens are letter runs, digit runs, and every other visible character on its own (``_TOKEN_RE``).
The taggers' hot paths need them as arrays, not objects, so the tokenizer works on the note's code
points: each character gets its class (letter, digit, space, other) from a table built from the
regular expression itself, and token boundaries are where the class changes. ``tokenize`` and
``segment`` return ``Token`` objects on top of those arrays, for everything that is not hot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt

from medner_udf.text.types import Token

# Letter runs, digit runs, and every other visible character on its own. Splitting letters from
# digits and isolating punctuation puts a token boundary at nearly every MACCROBAT mention boundary
# ("28-year-old" -> 28 - year - old, "5mg" -> 5 mg); `[^\W\d_]` is "a word character that is neither
# a digit nor an underscore", i.e. a letter in any script.
_TOKEN_RE = re.compile(r"[^\W\d_]+|\d+|[^\s]", re.UNICODE)
_LETTER_RE, _DIGIT_RE, _SPACE_RE = (re.compile(p, re.UNICODE) for p in (r"[^\W\d_]", r"\d", r"\s"))
SPACE, LETTER, DIGIT, OTHER = 0, 1, 2, 3

# Notes arrive as one long string; taggers work on bounded sequences. Lines are the natural unit
# in case reports (MACCROBAT has one sentence per line). A line longer than this is cut at
# sentence-final punctuation, and failing that, hard-cut: nothing is ever dropped.
DEFAULT_MAX_SEGMENT_TOKENS = 128
_SENTENCE_END = np.array([ord(c) for c in ".!?;"], dtype=np.uint32)

IntArray = npt.NDArray[np.int64]


def codepoints(text: str) -> npt.NDArray[np.uint32]:
    """The note as code points: index i is ``text[i]`` (lone surrogates kept as their value)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


@cache
def _bmp_classes() -> npt.NDArray[np.int8]:
    """The class of every code point below 0x10000, read off the regular expressions themselves."""
    every = "".join(map(chr, range(0x10000)))
    classes = np.full(0x10000, OTHER, dtype=np.int8)
    for pattern, value in ((_SPACE_RE, SPACE), (_DIGIT_RE, DIGIT), (_LETTER_RE, LETTER)):
        classes[[m.start() for m in pattern.finditer(every)]] = value
    return classes


def _class_of(char: str) -> int:
    if _LETTER_RE.match(char):
        return LETTER
    if _DIGIT_RE.match(char):
        return DIGIT
    return SPACE if _SPACE_RE.match(char) else OTHER


def char_classes(points: npt.NDArray[np.uint32]) -> npt.NDArray[np.int8]:
    """SPACE / LETTER / DIGIT / OTHER for each code point."""
    classes = _bmp_classes()[np.minimum(points, 0xFFFF)]
    high = np.flatnonzero(points > 0xFFFF)
    if high.size:  # astral characters (emoji, rare scripts): one by one
        classes[high] = [_class_of(chr(int(p))) for p in points[high]]
    return classes


def token_bounds(text: str, start: int = 0, end: int | None = None) -> tuple[IntArray, IntArray]:
    """(begins, ends) of the tokens of ``text[start:end]``, offsets into ``text``; exactly the
    matches of ``_TOKEN_RE`` (a letter run, a digit run, or one other visible character)."""
    stop = len(text) if end is None else end
    classes = char_classes(codepoints(text[start:stop]))
    if classes.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    visible = classes != SPACE
    alone = classes == OTHER
    before = np.empty_like(classes)
    before[0], before[1:] = SPACE, classes[:-1]
    after = np.empty_like(classes)
    after[-1], after[:-1] = SPACE, classes[1:]
    begins = np.flatnonzero(visible & ((classes != before) | alone))
    ends = np.flatnonzero(visible & ((classes != after) | alone)) + 1
    return begins + start, ends + start


def tokenize(text: str, start: int = 0, end: int | None = None) -> list[Token]:
    """Tokens of ``text[start:end]`` with offsets into ``text`` (not into the slice)."""
    begins, ends = token_bounds(text, start, end)
    return [Token(b, e, text[b:e]) for b, e in zip(begins.tolist(), ends.tolist(), strict=True)]


@dataclass(frozen=True)
class Segments:
    """A note's tokens as arrays and its segments as ranges of them: segment k is tokens
    ``starts[k]:stops[k]``. Concatenated, the segments are every token once, in order."""

    begins: IntArray
    ends: IntArray
    starts: IntArray
    stops: IntArray

    def __len__(self) -> int:
        return len(self.starts)

    def tokens(self, text: str, k: int) -> list[Token]:
        a, b = int(self.starts[k]), int(self.stops[k])
        return [
            Token(s, e, text[s:e])
            for s, e in zip(self.begins[a:b].tolist(), self.ends[a:b].tolist(), strict=True)
        ]


def _line_breaks(points: npt.NDArray[np.uint32]) -> IntArray:
    """Where each line ends: at every \\r, and at every \\n that does not follow a \\r."""
    cr, lf = points == 13, points == 10
    lf_alone = lf.copy()
    lf_alone[1:] &= ~cr[:-1]
    return np.flatnonzero(cr | lf_alone)


def _cuts(
    first: int, stop: int, sentence_end: npt.NDArray[np.bool_], max_tokens: int
) -> Iterator[tuple[int, int]]:
    """Tokens first..stop of one line in pieces of at most ``max_tokens``, each cut just after the
    last sentence end in the second half of the piece when there is one."""
    while stop - first > max_tokens:
        cut = max_tokens
        window = np.flatnonzero(sentence_end[first + max_tokens // 2 : first + max_tokens])
        if window.size:
            cut = max_tokens // 2 + int(window[-1]) + 1
        yield first, first + cut
        first += cut
    if stop > first:
        yield first, stop


def segment_bounds(text: str, max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS, pack: bool = False) -> Segments:
    """``segment`` as arrays (see there)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    begins, ends = token_bounds(text)
    if not len(begins):
        return Segments(begins, ends, begins, begins)
    points = codepoints(text)
    single = ends - begins == 1
    sentence_end = np.zeros(len(begins), dtype=bool)
    sentence_end[single] = np.isin(points[begins[single]], _SENTENCE_END)
    line_of = np.searchsorted(_line_breaks(points), begins, side="right")
    line_starts = np.flatnonzero(np.r_[True, line_of[1:] != line_of[:-1]])
    line_stops = np.r_[line_starts[1:], len(begins)].astype(np.int64)
    pieces: list[tuple[int, int]] = []
    for a, b in zip(line_starts.tolist(), line_stops.tolist(), strict=True):
        for piece in _cuts(a, b, sentence_end, max_tokens):
            if pack and pieces and piece[1] - pieces[-1][0] <= max_tokens:
                pieces[-1] = (pieces[-1][0], piece[1])
            else:
                pieces.append(piece)
    starts = np.array([p[0] for p in pieces], dtype=np.int64)
    stops = np.array([p[1] for p in pieces], dtype=np.int64)
    return Segments(begins, ends, starts, stops)


def segment(text: str, max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS, pack: bool = False) -> list[list[Token]]:
    """Split a note into token sequences (lines, long lines cut) that together cover every token.

    A line is what ends at ``\\n``, ``\\r\\n`` or a lone ``\\r``. With ``pack``, consecutive lines
    are joined while the result stays within ``max_tokens``, so a tagger sees neighbouring sentences
    as context. Concatenating the segments gives exactly ``tokenize(text)`` either way: no token is
    lost or repeated.
    """
    segments = segment_bounds(text, max_tokens, pack)
    return [segments.tokens(text, k) for k in range(len(segments))]

"""Offset-keeping tokenisation and segmentation of raw notes.

Nothing here normalises the note: every token is a slice of the original string, so character
offsets computed from tokens always index the note the caller passed in (the offsets contract of
the entities table, docs/extraction.md, "Tables").
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from medner_udf.text.types import Token

# Letter runs, digit runs, and every other visible character on its own. Splitting letters from
# digits and isolating punctuation puts a token boundary at nearly every MACCROBAT mention boundary
# ("28-year-old" -> 28 - year - old, "5mg" -> 5 mg); `[^\W\d_]` is "a word character that is neither
# a digit nor an underscore", i.e. a letter in any script.
_TOKEN_RE = re.compile(r"[^\W\d_]+|\d+|[^\s]", re.UNICODE)

# Notes arrive as one long string; taggers work on bounded sequences. Lines are the natural unit
# in case reports (MACCROBAT has one sentence per line). A line longer than this is cut at
# sentence-final punctuation, and failing that, hard-cut: nothing is ever dropped.
DEFAULT_MAX_SEGMENT_TOKENS = 128
_SENTENCE_END = frozenset(".!?;")


def tokenize(text: str, start: int = 0, end: int | None = None) -> list[Token]:
    """Tokens of ``text[start:end]`` with offsets into ``text`` (not into the slice)."""
    stop = len(text) if end is None else end
    return [Token(m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text, start, stop)]


def _line_bounds(text: str) -> Iterator[tuple[int, int]]:
    """(start, end) of every line; handles \\n, \\r\\n and lone \\r line endings alike."""
    start = 0
    for m in re.finditer(r"\r\n|\r|\n", text):
        yield start, m.start()
        start = m.end()
    yield start, len(text)


def _cut(tokens: list[Token], max_tokens: int) -> Iterator[list[Token]]:
    """Cut a long token run into pieces of at most ``max_tokens``, preferring sentence ends."""
    while len(tokens) > max_tokens:
        cut = max_tokens
        # Search backwards for a sentence end in the second half of the window, so pieces stay long.
        for i in range(max_tokens - 1, max_tokens // 2 - 1, -1):
            if tokens[i].text in _SENTENCE_END:
                cut = i + 1
                break
        yield tokens[:cut]
        tokens = tokens[cut:]
    if tokens:
        yield tokens


def segment(text: str, max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS, pack: bool = False) -> list[list[Token]]:
    """Split a note into token sequences (lines, long lines cut) that together cover every token.

    With ``pack``, consecutive lines are joined while the result stays within ``max_tokens``, so a
    tagger sees neighbouring sentences as context. Concatenating the segments gives exactly
    ``tokenize(text)`` either way: no token is lost or repeated.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    segments: list[list[Token]] = []
    for line_start, line_end in _line_bounds(text):
        for piece in _cut(tokenize(text, line_start, line_end), max_tokens):
            if pack and segments and len(segments[-1]) + len(piece) <= max_tokens:
                segments[-1] = segments[-1] + piece
            else:
                segments.append(piece)
    return segments

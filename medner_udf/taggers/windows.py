"""Windows over a note's sub-word pieces: how a transformer sees notes longer than its context.

A note is encoded once (``EncodedNote``: its words, its pieces, each word's first piece). At
inference it is cut into windows of ``capacity`` pieces whose starts are ``stride`` apart, and each
word takes its emissions from the window where its first piece has the most context on its shorter
side (``assign_windows``); nothing is ever truncated. In training, windows cover every word once and
are cut only at word boundaries outside a mention (``training_windows``), so a CRF never sees a gold
path that starts inside an entity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medner_udf.text.types import Token

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EncodedNote:
    """A note as the network sees it: its words (character offsets), its pieces, and where each
    word starts."""

    begins: IntArray  # shape: (n_words,) where each word starts in the note
    ends: IntArray  # shape: (n_words,) where it ends (exclusive)
    piece_ids: IntArray  # shape: (n_pieces,)
    first_piece: IntArray  # shape: (n_words,) index into piece_ids of each word's first piece
    blocks: list[tuple[int, int]]  # word ranges [a, b) windowed independently (scope)

    @property
    def n_words(self) -> int:
        return len(self.begins)

    def words(self, text: str) -> list[Token]:
        """The words as tokens of ``text`` (the note this was encoded from)."""
        return [Token(b, e, text[b:e]) for b, e in zip(self.begins.tolist(), self.ends.tolist(), strict=True)]

    def piece_bound(self, word: int) -> int:
        """First piece of ``word``; ``n_pieces`` for the position after the last word."""
        return int(self.first_piece[word]) if word < self.n_words else len(self.piece_ids)

    def block_end(self, word_end: int) -> int:
        """End of the pieces of words [.., word_end): past the next word's first piece, and past
        the last word's first piece even when the two share it (a piece spanning the boundary)."""
        return max(self.piece_bound(word_end), int(self.first_piece[word_end - 1]) + 1)


def align_pieces(
    begins: IntArray, ends: IntArray, ids: IntArray, offsets: IntArray, unk: int
) -> tuple[IntArray, IntArray]:
    """(piece ids, first piece of each word) for words ``begins``/``ends`` and the sub-word pieces
    the tokenizer made of the whole note (``ids``, character ``offsets`` (n, 2)).

    A word's first piece is the first piece that ends after the word begins, when that piece starts
    before the word ends; a piece spanning two words ("5mg" in some vocabularies) is thus shared.
    A word no piece overlaps (the tokenizer dropped it: a control character, say) gets an ``unk``
    piece of its own, inserted where the word is, so every word has a prediction. Pieces outside
    every word stay where they are. All of it with sorted-array searches, no loop over words.
    """
    n_pieces = len(ids)
    piece_starts, piece_ends = offsets[:, 0], offsets[:, 1]
    if n_pieces and np.any(np.diff(piece_ends) < 0):
        raise ValueError("the tokenizer's piece offsets are not in order; windows need them sorted")
    first_candidate = np.searchsorted(piece_ends, begins, side="right")  # first piece ending after it
    clipped = np.minimum(first_candidate, max(n_pieces - 1, 0))
    overlaps = (
        (first_candidate < n_pieces) & (piece_starts[clipped] < ends)
        if n_pieces
        else np.zeros(len(begins), bool)
    )
    insert_at = first_candidate[~overlaps]  # before which original piece each unk goes (sorted)
    first = np.empty(len(begins), dtype=np.int64)
    # A shared or own piece moves right by the unks inserted before (or at) it ...
    first[overlaps] = first_candidate[overlaps] + np.searchsorted(
        insert_at, first_candidate[overlaps], side="right"
    )
    # ... and the k-th unk lands k places after its insertion point.
    first[~overlaps] = insert_at + np.arange(len(insert_at))
    return np.insert(ids, insert_at, unk).astype(np.int64), first


@dataclass(frozen=True)
class Window:
    """A slice of a note's pieces and the words whose emissions it provides (or is trained on)."""

    note: int
    piece_start: int
    piece_end: int
    word_start: int  # the window provides words [word_start, word_end)
    word_end: int


def window_starts(n_pieces: int, capacity: int, stride: int) -> list[int]:
    """Window starts covering ``n_pieces``: every ``stride``, the last one flush with the end."""
    if n_pieces <= capacity:
        return [0]
    starts = list(range(0, n_pieces - capacity, stride))
    starts.append(n_pieces - capacity)
    return starts


def assign_windows(
    first_piece: IntArray, piece_lo: int, piece_hi: int, capacity: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """(piece_start, piece_end, word_start, word_end) windows over pieces [piece_lo, piece_hi).

    ``first_piece`` holds the first pieces of the block's words (sorted, all inside the range);
    word indices returned are positions in ``first_piece``. Each word goes to the window where
    ``min(pieces to its left, pieces to its right)`` inside the window is largest; with windows of
    equal size this makes each window's words one contiguous run.
    """
    n_words = len(first_piece)
    best_window = np.full(n_words, -1, dtype=np.int64)
    best_context = np.full(n_words, -1, dtype=np.int64)
    bounds = []
    for k, rel in enumerate(window_starts(piece_hi - piece_lo, capacity, stride)):
        start = piece_lo + rel
        end = min(start + capacity, piece_hi)
        bounds.append((start, end))
        inside = (first_piece >= start) & (first_piece < end)
        context = np.minimum(first_piece - start, end - 1 - first_piece)
        better = inside & (context > best_context)
        best_window[better] = k
        best_context[better] = context[better]
    assert (best_window >= 0).all(), "every word's first piece lies in some window"
    out = []
    for k, (start, end) in enumerate(bounds):
        members = np.flatnonzero(best_window == k)
        if members.size == 0:
            continue
        # Contiguity lets a window carry a word range; it holds because contexts are unimodal in
        # the piece position and windows are ordered.
        assert members[-1] - members[0] + 1 == members.size, "window words must be contiguous"
        out.append((start, end, int(members[0]), int(members[-1]) + 1))
    return out


def _safe_cut(tags: Sequence[str], first: IntArray, a: int, c: int) -> int:
    """Move a cut at word ``c`` (a < c) left until it falls outside a mention and between pieces."""
    cut = c
    while cut > a + 1 and (tags[cut][0] in "IE" or first[cut] == first[cut - 1]):
        cut -= 1
    return cut if cut > a + 1 or tags[cut][0] not in "IE" else c


def training_windows(
    note: EncodedNote,
    note_index: int,
    tags: Sequence[str],
    blocks: Sequence[tuple[int, int]],
    capacity: int,
    pack: bool,
) -> list[Window]:
    """Windows of at most ``capacity`` pieces covering every word once.

    ``blocks`` are the note's lines as word ranges. A line longer than a window is cut at the last
    word boundary that fits and is outside a mention; with ``pack`` consecutive lines share a window.
    """
    first = note.first_piece
    units: list[tuple[int, int]] = []
    for a, b in blocks:
        while a < b:
            if b - a == 1 or note.block_end(b) - note.piece_bound(a) <= capacity:
                units.append((a, b))
                break
            # The furthest word whose first piece still fits, then back to a safe boundary.
            c = int(np.searchsorted(first, first[a] + capacity, side="right")) - 1
            c = min(max(c, a + 1), b - 1)
            c = _safe_cut(tags, first, a, c)
            units.append((a, c))
            a = c
    merged: list[tuple[int, int]] = []
    for a, b in units:
        if pack and merged and note.block_end(b) - note.piece_bound(merged[-1][0]) <= capacity:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return [Window(note_index, note.piece_bound(a), note.block_end(b), a, b) for a, b in merged]

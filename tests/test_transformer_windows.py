"""Window arithmetic of the transformer tagger: coverage, most-context choice, safe training cuts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medner_udf.taggers.windows import EncodedNote, assign_windows, training_windows, window_starts


def test_transformer_window_starts_cover_and_end_flush() -> None:
    assert window_starts(5, 10, 4) == [0]
    assert window_starts(23, 10, 4) == [0, 4, 8, 12, 13]
    assert window_starts(10, 10, 4) == [0]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(0, 3), min_size=1, max_size=80),
    capacity=st.integers(2, 20),
    stride_frac=st.floats(0.05, 1.0),
)
def test_transformer_assign_windows_most_context(gaps: list[int], capacity: int, stride_frac: float) -> None:
    # Words' first pieces: non-decreasing (gap 0 = a piece shared with the previous word).
    first = np.cumsum(np.asarray(gaps, dtype=np.int64)) - gaps[0]
    n_pieces = int(first[-1]) + 1 + 2
    stride = max(1, int(stride_frac * capacity))
    windows = assign_windows(first, 0, n_pieces, capacity, stride)
    covered = [w for _, _, a, b in windows for w in range(a, b)]
    assert covered == list(range(len(first)))  # every word exactly once, in order
    starts = [s for s in window_starts(n_pieces, capacity, stride)]
    for ps, pe, a, b in windows:
        assert pe - ps <= capacity
        for w in range(a, b):
            p = int(first[w])
            assert ps <= p < pe
            best = max(
                min(p - s, min(s + capacity, n_pieces) - 1 - p) for s in starts if s <= p < s + capacity
            )
            assert min(p - ps, pe - 1 - p) == best


def _note(first: list[int], n_pieces: int) -> EncodedNote:
    begins = np.arange(len(first), dtype=np.int64)
    return EncodedNote(begins, begins + 1, np.zeros(n_pieces, np.int64), np.asarray(first, np.int64), [])


def test_transformer_training_windows_cut_outside_mentions() -> None:
    # 12 words, 2 pieces each; a mention over words 3-6 straddles the natural cut at word 5.
    first = [2 * i for i in range(12)]
    tags = ["O", "O", "O", "B-X", "I-X", "I-X", "E-X", "O", "S-Y", "O", "O", "O"]
    note = _note(first, 24)
    windows = training_windows(note, 0, tags, [(0, 12)], capacity=10, pack=True)
    assert [(w.word_start, w.word_end) for w in windows] == [(0, 3), (3, 8), (8, 12)]
    for w in windows:
        assert w.piece_end - w.piece_start <= 10
        assert tags[w.word_start][0] not in "IE"


def test_transformer_training_windows_pack_lines() -> None:
    first = list(range(10))
    tags = ["O"] * 10
    blocks = [(0, 3), (3, 5), (5, 9), (9, 10)]
    packed = training_windows(_note(first, 10), 0, tags, blocks, capacity=6, pack=True)
    assert [(w.word_start, w.word_end) for w in packed] == [(0, 5), (5, 10)]
    alone = training_windows(_note(first, 10), 0, tags, blocks, capacity=6, pack=False)
    assert [(w.word_start, w.word_end) for w in alone] == blocks


@pytest.mark.parametrize("capacity", [1, 3, 7])
def test_transformer_training_windows_never_exceed_capacity(capacity: int) -> None:
    rng = np.random.default_rng(capacity)
    first = np.cumsum(rng.integers(1, 3, size=40)).tolist()
    first = [f - first[0] for f in first]
    n_pieces = first[-1] + 2
    tags = ["O"] * 40
    windows = training_windows(_note(first, n_pieces), 0, tags, [(0, 40)], capacity, pack=True)
    assert [w for win in windows for w in range(win.word_start, win.word_end)] == list(range(40))
    # A word longer than the capacity gets a window of its own; otherwise windows fit.
    for win in windows:
        assert win.piece_end - win.piece_start <= capacity or win.word_end - win.word_start == 1

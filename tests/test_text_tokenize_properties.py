"""Property tests for medner_udf.text.tokens over arbitrary Unicode (surrogates, controls, \\r\\n and \\r)."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medner_udf.text.tokens import segment, tokenize

# Every code point category, lone surrogates included (they are legal in a Python str and do turn
# up in badly decoded exports); line endings and controls are mixed in on purpose.
ANY_TEXT = st.lists(
    st.one_of(
        st.characters(),
        st.characters(categories=["Cs"]),  # lone surrogates: hypothesis leaves them out by default
        st.characters(categories=["Cc", "Zs", "Zl", "Zp", "Nd", "P"]),
        st.sampled_from(["\r\n", "\r", "\n", "\t", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", " ", "\x00"]),
    ),
    max_size=200,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
@example("28-year-old\r\nman, 5mg\rq.d.\u2028µ≥10")
@example("\ud800a\udfff 1\x00")
def test_tokens_are_ordered_nonoverlapping_slices_without_whitespace(text: str) -> None:
    tokens = tokenize(text)
    prev_end = 0
    for tok in tokens:
        assert tok.text == text[tok.begin : tok.end]
        assert tok.begin >= prev_end and tok.end > tok.begin
        assert not any(ch.isspace() for ch in tok.text)
        prev_end = tok.end


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT)
@example("a\r\nb \x85c\u3000d")
def test_every_non_whitespace_char_is_in_exactly_one_token(text: str) -> None:
    cover = [0] * len(text)
    for tok in tokenize(text):
        for i in range(tok.begin, tok.end):
            cover[i] += 1
    for i, ch in enumerate(text):
        # Python's str.isspace and the regex's \s agree on which characters are whitespace.
        assert cover[i] == (0 if ch.isspace() else 1), (i, hex(ord(ch)))


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.integers(min_value=1, max_value=12))
@example("one two three. four five six seven\r\neight", 3)
def test_segments_concatenate_to_tokenize_and_respect_max_tokens(text: str, max_tokens: int) -> None:
    segments = segment(text, max_tokens)
    assert [t for seg in segments for t in seg] == tokenize(text)
    assert all(1 <= len(seg) <= max_tokens for seg in segments)


@given(st.text(max_size=50), st.integers(min_value=0, max_value=50), st.integers(min_value=0, max_value=50))
def test_tokenize_window_offsets_index_the_whole_text(text: str, start: int, stop: int) -> None:
    for tok in tokenize(text, start, stop):
        assert start <= tok.begin and tok.end <= min(stop, len(text))
        assert text[tok.begin : tok.end] == tok.text


def test_tokenize_splits_letters_digits_and_punctuation() -> None:
    words = [t.text for t in tokenize("A 28-year-old took 5mg; BP 120/80.")]
    assert words == ["A", "28", "-", "year", "-", "old", "took", "5", "mg", ";", "BP", "120", "/", "80", "."]


def test_segment_breaks_at_every_line_ending_kind() -> None:
    segs = segment("a b\r\nc\rd\ne")
    assert [[t.text for t in s] for s in segs] == [["a", "b"], ["c"], ["d"], ["e"]]


def test_segment_prefers_sentence_end_when_cutting() -> None:
    # 6 tokens, max 4: the cut goes after '.', in the second half of the window, not hard at 4.
    segs = segment("a b . c d e", max_tokens=4)
    assert [[t.text for t in s] for s in segs] == [["a", "b", "."], ["c", "d", "e"]]


def test_segment_rejects_bad_max_tokens() -> None:
    with pytest.raises(ValueError, match="max_tokens must be >= 1, got 0"):
        segment("a", 0)


@settings(max_examples=200, deadline=None)
@given(ANY_TEXT, st.integers(min_value=1, max_value=12))
def test_packed_segments_concatenate_to_tokenize_and_respect_max_tokens(text: str, max_tokens: int) -> None:
    packed = segment(text, max_tokens, pack=True)
    assert [t for seg in packed for t in seg] == tokenize(text)
    assert all(1 <= len(seg) <= max_tokens for seg in packed)
    # Packing never splits what line segmentation kept together, and never has more pieces.
    assert len(packed) <= len(segment(text, max_tokens))


def test_packing_joins_short_lines_up_to_the_limit() -> None:
    text = "a b\nc d\ne f\ng"
    assert [[t.text for t in s] for s in segment(text, 4, pack=True)] == [
        ["a", "b", "c", "d"],
        ["e", "f", "g"],
    ]

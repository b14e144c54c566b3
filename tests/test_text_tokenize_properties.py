"""Property tests for medner_udf.text.tokens over arbitrary Unicode (surrogates, controls, \\r\\n and \\r)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from medner_udf.corpus.maccrobat import Document
from medner_udf.text.tokens import _TOKEN_RE, segment, token_bounds, tokenize

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


# The straightforward reading of the segmentation rules (token by token), as an oracle for the
# array implementation in medner_udf.text.tokens.
def _reference_segment(text: str, max_tokens: int, pack: bool) -> list[list[tuple[int, int]]]:
    def regex_tokens(a: int, b: int) -> list[tuple[int, int]]:
        return [(m.start(), m.end()) for m in _TOKEN_RE.finditer(text, a, b)]

    lines, start = [], 0
    for m in re.finditer(r"\r\n|\r|\n", text):
        lines.append((start, m.start()))
        start = m.end()
    lines.append((start, len(text)))
    out: list[list[tuple[int, int]]] = []
    for a, b in lines:
        tokens = regex_tokens(a, b)
        pieces = []
        while len(tokens) > max_tokens:
            cut = max_tokens
            for i in range(max_tokens - 1, max_tokens // 2 - 1, -1):
                if text[tokens[i][0] : tokens[i][1]] in ".!?;":
                    cut = i + 1
                    break
            pieces.append(tokens[:cut])
            tokens = tokens[cut:]
        if tokens:
            pieces.append(tokens)
        for piece in pieces:
            if pack and out and len(out[-1]) + len(piece) <= max_tokens:
                out[-1] = out[-1] + piece
            else:
                out.append(piece)
    return out


def test_char_classes_are_the_regular_expression_s_on_every_bmp_character() -> None:
    every = "".join(map(chr, range(0x10000)))
    begins, ends = token_bounds(every)
    want = [(m.start(), m.end()) for m in _TOKEN_RE.finditer(every)]
    assert list(zip(begins.tolist(), ends.tolist(), strict=True)) == want
    spaced = " ".join(every[::7]) + "\U0001f600a\U0001d7d8\U00010400"  # astral emoji, digit, letter
    begins, ends = token_bounds(spaced)
    want = [(m.start(), m.end()) for m in _TOKEN_RE.finditer(spaced)]
    assert list(zip(begins.tolist(), ends.tolist(), strict=True)) == want


@settings(max_examples=300, deadline=None)
@given(ANY_TEXT, st.integers(1, 12), st.booleans())
@example("a b c. d e f g. h i\r\nj k;l m n o p q", 4, True)
def test_array_tokenizer_and_segmenter_match_the_regex_reading(
    text: str, max_tokens: int, pack: bool
) -> None:
    begins, ends = token_bounds(text)
    assert list(zip(begins.tolist(), ends.tolist(), strict=True)) == [
        (m.start(), m.end()) for m in _TOKEN_RE.finditer(text)
    ]
    got = [[(t.begin, t.end) for t in seg] for seg in segment(text, max_tokens, pack)]
    assert got == _reference_segment(text, max_tokens, pack)


def test_segmentation_of_the_corpus_matches_the_reference(corpus_docs: list[Document]) -> None:
    for doc in corpus_docs[:60]:
        for max_tokens, pack in ((128, False), (128, True), (20, True)):
            got = [[(t.begin, t.end) for t in seg] for seg in segment(doc.text, max_tokens, pack)]
            assert got == _reference_segment(doc.text, max_tokens, pack), doc.doc_id

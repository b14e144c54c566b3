"""BIOES flattening, tagging, decoding and transition constraints."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from medner_udf.corpus.dataset import to_sentences
from medner_udf.corpus.maccrobat import Document
from medner_udf.text.scheme import (
    TagCodes,
    allowed_transitions,
    flatten,
    paths_to_spans,
    spans_to_tags,
    tag_set,
    tags_to_token_spans,
)
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Span, Token


def test_flatten_keeps_longest_first_and_reports_drops() -> None:
    outer = Span(10, 27, "Sign_symptom")
    inner = Span(17, 22, "Biological_structure")
    severity = Span(10, 16, "Severity")
    same_span_other_type = Span(10, 16, "Detailed_description")
    later = Span(30, 35, "Date")
    flat = flatten([inner, severity, later, outer, same_span_other_type])
    assert flat.kept == [outer, later]
    assert flat.dropped == [same_span_other_type, severity, inner]


def test_flatten_identical_spans_keep_alphabetically_first_label() -> None:
    flat = flatten([Span(0, 4, "Severity"), Span(0, 4, "Detailed_description")])
    assert flat.kept == [Span(0, 4, "Detailed_description")]
    assert flat.dropped == [Span(0, 4, "Severity")]


def test_flatten_crossing_pair_keeps_the_longer() -> None:
    flat = flatten([Span(0, 6, "A"), Span(4, 12, "B")])
    assert flat.kept == [Span(4, 12, "B")]


def test_spans_to_tags_bioes() -> None:
    text = "A 45-year-old man had chest pain ."
    tokens = tokenize(text)
    tags = spans_to_tags(tokens, [Span(2, 13, "Age"), Span(14, 17, "Sex"), Span(22, 32, "Sign_symptom")])
    assert tags == [
        "O", "B-Age", "I-Age", "I-Age", "I-Age", "E-Age", "S-Sex", "O",
        "B-Sign_symptom", "E-Sign_symptom", "O",
    ]  # fmt: skip


def test_spans_to_tags_widens_a_boundary_inside_a_token() -> None:
    tokens = tokenize("hypertension")
    assert spans_to_tags(tokens, [Span(5, 12, "Disease_disorder")]) == ["S-Disease_disorder"]


def test_spans_to_tags_rejects_overlaps() -> None:
    tokens = tokenize("chest pain")
    with pytest.raises(ValueError, match="non-overlapping"):
        spans_to_tags(tokens, [Span(0, 10, "Sign_symptom"), Span(0, 5, "Biological_structure")])


def _random_spans(n_tokens: int) -> st.SearchStrategy[list[tuple[int, int, str]]]:
    """Non-overlapping token ranges with random types."""

    @st.composite
    def build(draw: st.DrawFn) -> list[tuple[int, int, str]]:
        out = []
        i = 0
        while i < n_tokens:
            if draw(st.booleans()):
                length = draw(st.integers(1, min(4, n_tokens - i)))
                out.append((i, i + length, draw(st.sampled_from(["Age", "Sex", "Lab_value"]))))
                i += length
            else:
                i += 1
        return out

    return build()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 15).flatmap(lambda n: st.tuples(st.just(n), _random_spans(n))))
def test_spans_to_tags_and_back_round_trip(case: tuple[int, list[tuple[int, int, str]]]) -> None:
    n, token_spans = case
    tokens = [Token(3 * i, 3 * i + 2, "ab") for i in range(n)]
    char_spans = [Span(tokens[a].begin, tokens[b - 1].end, lab) for a, b, lab in token_spans]
    tags = spans_to_tags(tokens, char_spans)
    assert tags_to_token_spans(tags) == token_spans
    start, trans, end = allowed_transitions(tag_set(["Age", "Lab_value", "Sex"]))
    index = {t: i for i, t in enumerate(tag_set(["Age", "Lab_value", "Sex"]))}
    if tags:  # every tagged sequence is a valid BIOES path
        assert start[index[tags[0]]] and end[index[tags[-1]]]
        assert all(trans[index[a], index[b]] for a, b in itertools.pairwise(tags))


def test_tags_to_token_spans_is_lenient_on_invalid_sequences() -> None:
    assert tags_to_token_spans(["I-Age", "E-Age", "O", "B-Sex", "I-Sex"]) == [(0, 2, "Age"), (3, 5, "Sex")]
    assert tags_to_token_spans(["B-Age", "E-Sex"]) == [(0, 1, "Age"), (1, 2, "Sex")]


def test_allowed_transitions_forbid_invalid_moves() -> None:
    tags = tag_set(["Age", "Sex"])
    start, trans, end = allowed_transitions(tags)
    i = {t: n for n, t in enumerate(tags)}

    def ok(a: str, b: str) -> bool:
        return bool(trans[i[a], i[b]])

    assert not ok("O", "I-Age") and not ok("O", "E-Age")
    assert not ok("B-Age", "I-Sex") and not ok("B-Age", "E-Sex")
    assert not ok("B-Age", "O") and not ok("I-Age", "O") and not ok("B-Age", "B-Sex")
    assert not ok("E-Age", "I-Age") and not ok("S-Age", "E-Age")
    assert ok("O", "B-Age") and ok("O", "S-Sex") and ok("B-Age", "I-Age") and ok("B-Age", "E-Age")
    assert ok("I-Age", "E-Age") and ok("E-Age", "B-Sex") and ok("S-Age", "O") and ok("E-Sex", "O")
    assert not start[i["I-Age"]] and not start[i["E-Sex"]] and start[i["B-Age"]] and start[i["O"]]
    assert not end[i["B-Age"]] and not end[i["I-Sex"]] and end[i["E-Age"]] and end[i["S-Sex"]]


def test_tag_set_layout() -> None:
    assert tag_set(["Sex", "Age", "Sex"]) == [
        "O", "B-Age", "I-Age", "E-Age", "S-Age", "B-Sex", "I-Sex", "E-Sex", "S-Sex",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="at least one"):
        tag_set([])


def test_to_sentences_tags_the_part_of_a_mention_inside_each_line() -> None:
    text = "chest\npain now"
    doc = Document("d", text, (Span(0, 10, "Sign_symptom"), Span(11, 14, "Time")))
    sentences, report = to_sentences([doc])
    assert [s.tags for s in sentences] == [["S-Sign_symptom"], ["S-Sign_symptom", "S-Time"]]
    assert report.n_dropped == 0


def test_to_sentences_drop_report_on_real_corpus(corpus_docs: list[Document]) -> None:
    sentences, report = to_sentences(corpus_docs)
    assert report.n_mentions == 25_189
    assert report.n_dropped == 478
    assert report.n_docs_affected == 106
    assert sum(report.dropped_by_type.values()) == 478
    assert all(len(s.tokens) <= 128 and len(s.tokens) == len(s.tags) for s in sentences)


def test_flatten_most_keeps_the_inner_mentions_of_a_wrapping_one() -> None:
    outer = Span(0, 40, "History")
    inner = [Span(11, 23, "Disease_disorder"), Span(28, 36, "Disease_disorder")]
    flat = flatten([outer, *inner], policy="most")
    assert flat.kept == inner and flat.dropped == [outer]
    assert flatten([outer, *inner]).kept == [outer]  # the default policy keeps the outer one


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 20), st.integers(1, 6), st.sampled_from("AB")), min_size=0, max_size=8)
)
def test_flatten_most_keeps_as_many_mentions_as_any_non_overlapping_subset(
    raw: list[tuple[int, int, str]],
) -> None:
    spans = sorted({Span(b, b + n, label) for b, n, label in raw})
    flat = flatten(spans, policy="most")
    assert sorted(flat.kept + flat.dropped) == spans
    assert all(not (a.begin < b.end and b.begin < a.end) for a, b in itertools.combinations(flat.kept, 2))
    best = max(
        (
            len(sub)
            for r in range(len(spans) + 1)
            for sub in itertools.combinations(spans, r)
            if all(not (a.begin < b.end and b.begin < a.end) for a, b in itertools.combinations(sub, 2))
        ),
        default=0,
    )
    assert len(flat.kept) == best


def test_flatten_rejects_an_unknown_policy() -> None:
    with pytest.raises(ValueError, match="overlap policy"):
        flatten([], policy="shortest")


_TAGS = tag_set(["Age", "Lab_value", "Sex"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.integers(0, len(_TAGS) - 1), max_size=14), min_size=1, max_size=6))
def test_paths_to_spans_reads_any_batch_of_paths_as_tags_to_token_spans_does(rows: list[list[int]]) -> None:
    # Arbitrary tag ids, valid BIOES or not (a softmax head's), padded with a tag that is not O so
    # that reading past a row's end would show.
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    paths = np.full((len(rows), max(1, int(lengths.max()))), _TAGS.index("B-Sex"), dtype=np.int64)
    for b, r in enumerate(rows):
        paths[b, : len(r)] = r
    codes = TagCodes.of(_TAGS)
    row, first, last, kind = paths_to_spans(paths, lengths, codes)
    got = [(b, f, e + 1, codes.types[k]) for b, f, e, k in zip(row, first, last, kind, strict=True)]
    want = [
        (b, f, e, lab) for b, r in enumerate(rows) for f, e, lab in tags_to_token_spans([_TAGS[t] for t in r])
    ]
    assert got == want

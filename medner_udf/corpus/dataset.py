"""Training examples: documents -> token segments with BIOES tags, plus the flattening report."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medner_udf.corpus.maccrobat import Document
from medner_udf.text.scheme import flatten, spans_to_tags
from medner_udf.text.tokens import DEFAULT_MAX_SEGMENT_TOKENS, segment
from medner_udf.text.types import Span, Token


@dataclass(frozen=True)
class Sentence:
    """One segment of a document (a line, or a piece of a long line) with its gold tags."""

    doc_id: str
    tokens: list[Token]
    tags: list[str]


@dataclass(frozen=True)
class FlattenReport:
    n_mentions: int
    n_dropped: int
    n_docs_affected: int
    dropped_by_type: dict[str, int]

    @property
    def dropped_fraction(self) -> float:
        return self.n_dropped / self.n_mentions if self.n_mentions else 0.0


def to_sentences(
    docs: Sequence[Document],
    max_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
    pack: bool = False,
    overlap_policy: str = "longest",
) -> tuple[list[Sentence], FlattenReport]:
    """Segment every document as the taggers do at inference, and tag it from flattened mentions
    (``overlap_policy``: see ``medner_udf.text.scheme.flatten``).

    Mentions that cross a segment boundary (5 in MACCROBAT cross a line break) are tagged on the
    part inside each segment, as the tagger would see them; scoring is still against the gold spans.
    """
    sentences: list[Sentence] = []
    dropped_by_type: dict[str, int] = {}
    n_mentions = n_dropped = n_docs = 0
    for doc in docs:
        flat = flatten(doc.mentions, overlap_policy)
        n_mentions += len(doc.mentions)
        n_dropped += len(flat.dropped)
        n_docs += bool(flat.dropped)
        for span in flat.dropped:
            dropped_by_type[span.label] = dropped_by_type.get(span.label, 0) + 1
        for tokens in segment(doc.text, max_tokens, pack):
            seg_begin, seg_end = tokens[0].begin, tokens[-1].end
            inside = [
                Span(max(s.begin, seg_begin), min(s.end, seg_end), s.label)
                for s in flat.kept
                if s.begin < seg_end and seg_begin < s.end
            ]
            sentences.append(Sentence(doc.doc_id, tokens, spans_to_tags(tokens, inside)))
    report = FlattenReport(n_mentions, n_dropped, n_docs, dict(sorted(dropped_by_type.items())))
    return sentences, report

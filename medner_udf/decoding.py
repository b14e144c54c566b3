"""Turning a decoded tag path over a segment's tokens into entities with character offsets."""

from __future__ import annotations

from collections.abc import Sequence

from medner_udf.scheme import tags_to_token_spans
from medner_udf.types import Entity, Token


def token_segments(tag_names: Sequence[str]) -> list[tuple[int, int, str]]:
    """(first, last + 1, type) token ranges of the mentions in a tag path."""
    return tags_to_token_spans(tag_names)


def entities_from_path(
    text: str,
    tokens: Sequence[Token],
    segments: Sequence[tuple[int, int, str]],
    scores: Sequence[float],
) -> list[Entity]:
    """Entities for token ranges ``segments`` (as from ``token_segments``) with their ``scores``.

    Offsets come from the tokens, which are slices of ``text``, so ``text[begin:end]`` is the
    entity's text by construction.
    """
    out = []
    for (first, last, label), score in zip(segments, scores, strict=True):
        begin, end = tokens[first].begin, tokens[last - 1].end
        out.append(Entity(begin, end, text[begin:end], label, float(score)))
    return out


def sort_entities(entities: list[Entity]) -> list[Entity]:
    return sorted(entities, key=lambda e: (e.begin, e.end, e.label))

"""Turning a decoded tag path over a segment's tokens into entities with character offsets."""

from __future__ import annotations

from collections.abc import Sequence

from medner_udf.text.types import Entity, Token


def entities_from_path(
    text: str,
    tokens: Sequence[Token],
    segments: Sequence[tuple[int, int, str]],
    scores: Sequence[float],
) -> list[Entity]:
    """Entities for token ranges ``segments`` (as from ``scheme.tags_to_token_spans``) with their ``scores``.

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

"""Plain value types shared by the corpus reader, the taggers, the scorer and the Spark UDF."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Token:
    """A token of a note: ``note[begin:end] == text`` always holds (end exclusive)."""

    begin: int
    end: int
    text: str


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """A labelled character span (end exclusive), without a score: gold mentions and flat tags."""

    begin: int
    end: int
    label: str


@dataclass(frozen=True, slots=True)
class Entity:
    """A predicted entity: ``note[begin:end] == text``; ``score`` is the model's confidence in [0, 1]."""

    begin: int
    end: int
    text: str
    label: str
    score: float

    @property
    def span(self) -> Span:
        return Span(self.begin, self.end, self.label)

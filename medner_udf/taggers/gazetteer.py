"""A dictionary tagger: case-insensitive longest match of token sequences from a term list.

It is a real, deterministic ``Tagger`` (kind ``gazetteer``) with a real artifact, so the Spark job,
its tests and its benchmarks can run end to end in seconds without a trained network. Built from
gold mentions (``from_corpus``) it is also the trivial baseline every learned tagger must beat.

Artifact: ``artifact.json`` (kind, name, version, BIOES tags of its types) and ``terms.json``
(``{"terms": [[term, label], ...]}``). Matching is over ``medner_udf.text.tokens.tokenize`` tokens, so
entity offsets are token boundaries in the original note and ``text[begin:end]`` is exact.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from medner_udf.corpus.maccrobat import Document
from medner_udf.taggers.artifact import (
    ArtifactError,
    ArtifactInfo,
    read_info,
    read_json,
    write_info,
    write_json,
)
from medner_udf.taggers.base import Tagger, check_batch_size, check_texts
from medner_udf.text.scheme import tag_set
from medner_udf.text.tokens import tokenize
from medner_udf.text.types import Entity

KIND = "gazetteer"
TERMS_FILE = "terms.json"


def _key(text: str) -> tuple[str, ...]:
    return tuple(t.text.casefold() for t in tokenize(text))


@Tagger.register(KIND)
class GazetteerTagger(Tagger):
    """Longest-match dictionary tagger over token sequences; every match has score 1.0."""

    def __init__(self, terms: Iterable[tuple[str, str]], info: ArtifactInfo) -> None:
        self.info = info
        self._terms: dict[tuple[str, ...], str] = {}
        known = set(info.entity_types)
        for term, label in terms:
            if label not in known:
                raise ArtifactError(f"term label {label!r} is not among the artifact's types {sorted(known)}")
            key = _key(term)
            if key:
                # First occurrence wins so that the mapping does not depend on dict iteration tricks.
                self._terms.setdefault(key, label)
        self._max_len = max((len(k) for k in self._terms), default=0)
        self._device = torch.device("cpu")

    @classmethod
    def from_terms(
        cls, terms: Sequence[tuple[str, str]], name: str = "gazetteer", version: str = "1"
    ) -> GazetteerTagger:
        """A tagger over explicit (term, label) pairs."""
        labels = sorted({label for _, label in terms})
        if not labels:
            raise ValueError("need at least one (term, label) pair")
        return cls(terms, ArtifactInfo(kind=KIND, name=name, version=version, tags=tag_set(labels)))

    @classmethod
    def from_corpus(
        cls, docs: Sequence[Document], min_count: int = 2, name: str = "gazetteer", version: str = "1"
    ) -> GazetteerTagger:
        """Terms = gold mention surfaces seen at least ``min_count`` times, with their majority label."""
        if min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {min_count}")
        counts: dict[tuple[str, ...], Counter[str]] = {}
        surface: dict[tuple[str, ...], str] = {}
        for doc in docs:
            for m in doc.mentions:
                s = doc.text[m.begin : m.end]
                key = _key(s)
                # Punctuation-only surfaces ("-", "%") would match everywhere: never terms.
                if any(ch.isalnum() for ch in "".join(key)):
                    counts.setdefault(key, Counter())[m.label] += 1
                    surface.setdefault(key, s)
        terms = []
        for key in sorted(counts):
            c = counts[key]
            if sum(c.values()) >= min_count:
                # Majority label; ties broken by label name so the result is deterministic.
                label = min(c, key=lambda lab: (-c[lab], lab))
                terms.append((surface[key], label))
        return cls.from_terms(terms, name=name, version=version)

    @property
    def device(self) -> torch.device:
        return self._device

    def to(self, device: torch.device | str) -> GazetteerTagger:
        # Nothing to move: the dictionary lives in host memory. Remember the device so callers that
        # check placement (the Spark UDF) see what they asked for.
        self._device = torch.device(device)
        return self

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        notes = check_texts(texts)
        check_batch_size(batch_size, 1)
        return [self._tag_one(t) for t in notes]

    def _tag_one(self, text: str) -> list[Entity]:
        tokens = tokenize(text)
        folded = [t.text.casefold() for t in tokens]
        out: list[Entity] = []
        i = 0
        while i < len(tokens):
            for n in range(min(self._max_len, len(tokens) - i), 0, -1):
                label = self._terms.get(tuple(folded[i : i + n]))
                if label is not None:
                    begin, end = tokens[i].begin, tokens[i + n - 1].end
                    out.append(Entity(begin, end, text[begin:end], label, 1.0))
                    i += n
                    break
            else:
                i += 1
        return out

    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_info(directory, self.info)
        terms = [[" ".join(k), label] for k, label in sorted(self._terms.items())]
        write_json(directory / TERMS_FILE, {"terms": terms})
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> GazetteerTagger:
        directory = Path(directory)
        info = read_info(directory)
        if info.kind != KIND:
            raise ArtifactError(f"artifact {directory} is of kind {info.kind!r}, not {KIND!r}")
        raw = read_json(directory / TERMS_FILE)
        if not isinstance(raw, dict) or not isinstance(raw.get("terms"), list):
            raise ArtifactError(f"{directory / TERMS_FILE} must hold {{'terms': [[term, label], ...]}}")
        pairs = []
        for item in raw["terms"]:
            if not (isinstance(item, list) and len(item) == 2 and all(isinstance(x, str) for x in item)):
                raise ArtifactError(f"{directory / TERMS_FILE}: every term must be [term, label]")
            pairs.append((item[0], item[1]))
        tagger = cls(pairs, info)
        if device is not None:
            tagger.to(device)
        return tagger

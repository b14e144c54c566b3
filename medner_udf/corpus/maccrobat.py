"""MACCROBAT (brat standoff) reading, the standard document split, and corpus statistics.

Only ``T`` lines (text-bound mentions) matter for NER; ``E``, ``R``, ``A``, ``*`` and ``#`` lines add
no spans and are counted, not parsed. The quirks that NOTES.md lists are handled here:

- a stray extra tab field (``25661749.ann`` T145): split on tabs with a maximum split;
- discontinuous mentions ``Type s1 e1;s2 e2``: one span from the first start to the last end;
- surface strings with surrounding whitespace: the span is shrunk to its non-space core;
- ``T`` ids out of offset order: mentions are sorted by (begin, end, label);
- mentions across a line break, nested and identical-span mentions: kept as they are; flattening
  (``medner_udf.text.scheme``) decides what a flat tagger can learn.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medner_udf.text.types import Span

log = logging.getLogger(__name__)

CORPUS_ENV = "MEDNER_CORPUS"
# Beside every checkout (never inside it): ../shared/data/maccrobat/MACCROBAT2020.
DEFAULT_CORPUS = Path("..") / "shared" / "data" / "maccrobat" / "MACCROBAT2020"
_CHECKOUT = Path(__file__).resolve().parents[2]


def corpus_path(setting: str | Path | None) -> Path:
    """The corpus folder: the setting, else ``$MEDNER_CORPUS``, else ``../shared/...``.

    A relative default is tried against the current directory first, then beside the checkout this
    package was installed from (editable installs), so ``make`` targets work from any subfolder.
    """
    value = setting or os.environ.get(CORPUS_ENV) or DEFAULT_CORPUS
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (_CHECKOUT / path).exists():
        path = _CHECKOUT / path
    return path


# The only published document-level split (DICE, ACL 2023); see shared/data/maccrobat/NOTES.md.
DEV_IDS: tuple[str, ...] = tuple(
    "19214295 19610147 19860006 19860007 20977862 21477357 23076693 23155491 24043987 25246819 "
    "26361640 27100441 27130218 28033278 28121940 28173879 28292056 28353561 28353613 28767567".split()
)
TEST_IDS: tuple[str, ...] = tuple(
    "18258107 19009665 22520024 22791498 24161539 24654246 24957905 25023062 25743872 26474553 "
    "26530965 26670309 26683938 27842595 27842605 28100235 28100279 28272214 28353556 28538413".split()
)
SPLITS = ("train", "dev", "test", "all")


class CorpusError(ValueError):
    """A corpus file that cannot be read as brat standoff; the message names file and line number."""


@dataclass(frozen=True)
class Document:
    """One note with its gold mentions (character offsets into ``text``, end exclusive)."""

    doc_id: str
    text: str
    mentions: tuple[Span, ...] = ()
    # How many of the .ann file's T mentions were discontinuous (joined into one span).
    n_discontinuous: int = 0
    other_lines: Counter[str] = field(default_factory=Counter)


def _parse_offsets(field_text: str, where: str) -> tuple[int, int, bool]:
    """``"s e"`` or ``"s1 e1;s2 e2;…"`` -> (first start, last end, discontinuous?)."""
    try:
        pairs = [tuple(int(x) for x in part.split()) for part in field_text.split(";")]
    except ValueError as exc:
        raise CorpusError(f"{where}: offsets are not integers") from exc
    if not pairs or any(len(p) != 2 for p in pairs):
        raise CorpusError(f"{where}: expected 'start end' offset pairs")
    begin = min(p[0] for p in pairs)
    end = max(p[1] for p in pairs)
    return begin, end, len(pairs) > 1


def parse_ann(ann: str, text: str, doc_id: str = "?") -> tuple[list[Span], int, Counter[str]]:
    """Parse the ``T`` lines of a brat ``.ann`` file against its text.

    Returns (mentions sorted by offset, number of discontinuous mentions, counts of other line kinds).
    Raises CorpusError when a T line is malformed or points outside the text. Messages name the file
    and line, never the note's words.
    """
    spans: set[Span] = set()
    n_discontinuous = 0
    others: Counter[str] = Counter()
    for lineno, line in enumerate(ann.splitlines(), start=1):
        if not line.strip():
            continue
        kind = line[0]
        if kind != "T":
            others[kind] += 1
            continue
        where = f"{doc_id}.ann line {lineno}"
        # maxsplit=2: the surface string may itself hold a tab (the stray field in 25661749 T145).
        parts = line.split("\t", 2)
        if len(parts) < 2:
            raise CorpusError(f"{where}: T line has no type/offsets field")
        type_and_offsets = parts[1].split(" ", 1)
        if len(type_and_offsets) != 2:
            raise CorpusError(f"{where}: T line has no offsets")
        label, offsets = type_and_offsets
        begin, end, discontinuous = _parse_offsets(offsets, where)
        n_discontinuous += discontinuous
        if not 0 <= begin < end <= len(text):
            raise CorpusError(f"{where}: span {begin}-{end} outside the text (length {len(text)})")
        # Shrink to the non-space core: spans are scored stripped of surrounding whitespace
        # (docs/training.md, "Corpus reading" and "Evaluation").
        while begin < end and text[begin].isspace():
            begin += 1
        while end > begin and text[end - 1].isspace():
            end -= 1
        if begin == end:
            log.warning("%s: whitespace-only mention skipped", where)
            continue
        spans.add(Span(begin, end, label))
    return sorted(spans), n_discontinuous, others


def read_document(txt_path: Path) -> Document:
    """Read ``<id>.txt`` and its sibling ``<id>.ann``."""
    ann_path = txt_path.with_suffix(".ann")
    if not ann_path.is_file():
        raise CorpusError(f"{txt_path.name}: no matching .ann file")
    # newline="" keeps \r\n as two characters, so brat offsets (counted on the raw file) stay valid.
    with open(txt_path, encoding="utf-8", newline="") as fh:
        text = fh.read()
    with open(ann_path, encoding="utf-8", newline="") as fh:
        ann = fh.read()
    mentions, n_disc, others = parse_ann(ann, text, txt_path.stem)
    return Document(txt_path.stem, text, tuple(mentions), n_disc, others)


def read_corpus(root: Path | str, split: str = "all", ids: Iterable[str] | None = None) -> list[Document]:
    """Read the documents of one split (``train``, ``dev``, ``test`` or ``all``), sorted by id."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(
            f"corpus folder {root} does not exist; set --corpus or MEDNER_CORPUS to the MACCROBAT2020 folder"
        )
    available = {p.stem: p for p in root.glob("*.txt") if p.with_suffix(".ann").exists()}
    if not available:
        raise CorpusError(f"{root} holds no .txt/.ann pairs")
    wanted = set(ids) if ids is not None else set(split_ids(split, available))
    missing = wanted - available.keys()
    if missing and split in ("dev", "test"):
        raise CorpusError(f"{len(missing)} {split} documents are missing from {root}: {sorted(missing)[:5]}")
    return [read_document(available[i]) for i in sorted(wanted & available.keys())]


def split_ids(split: str, available: Iterable[str]) -> list[str]:
    """Document ids of ``split``; train is everything available that is neither dev nor test."""
    held_out = set(DEV_IDS) | set(TEST_IDS)
    if split == "dev":
        return list(DEV_IDS)
    if split == "test":
        return list(TEST_IDS)
    if split == "train":
        return sorted(i for i in available if i not in held_out)
    return sorted(available)


@dataclass(frozen=True)
class CorpusStats:
    n_documents: int
    n_characters: int
    n_tokens: int
    n_lines: int
    n_mentions: int
    n_discontinuous: int
    type_counts: Counter[str]
    other_lines: Counter[str]


def corpus_stats(docs: Sequence[Document]) -> CorpusStats:
    from medner_udf.text.tokens import tokenize

    types: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for d in docs:
        types.update(m.label for m in d.mentions)
        others.update(d.other_lines)
    return CorpusStats(
        n_documents=len(docs),
        n_characters=sum(len(d.text) for d in docs),
        n_tokens=sum(len(tokenize(d.text)) for d in docs),
        n_lines=sum(len(d.text.splitlines()) for d in docs),
        n_mentions=sum(len(d.mentions) for d in docs),
        n_discontinuous=sum(d.n_discontinuous for d in docs),
        type_counts=types,
        other_lines=others,
    )

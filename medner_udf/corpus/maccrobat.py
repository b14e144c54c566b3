"""MACCROBAT (brat standoff) reading, the standard document split, and corpus statistics.

``T`` lines are the mentions (what NER learns). The clinical layer reads the rest:

- ``E`` lines make a ``T`` mention an event trigger (no new span);
- ``A`` lines are attributes of events (or mentions): ``POLARITY`` (NEG, UNCERTAIN, MAYBE_POS,
  MAYBE_NEG, POS) gives every mention an assertion status (``ASSERTION_OF_POLARITY``), ``TREND`` is kept;
- ``R`` lines are directed relations ``TYPE Arg1:<id> Arg2:<id>``; an ``E`` argument stands for its
  trigger ``T``, so a relation joins two mention spans (head = Arg1, tail = Arg2);
- ``*`` lines are equivalence sets (``OVERLAP``), kept as sets of mention spans;
- ``#`` lines (annotator notes) are counted only.

The quirks that NOTES.md lists are handled here:

- a stray extra tab field (``25661749.ann`` T145): split on tabs with a maximum split;
- discontinuous mentions ``Type s1 e1;s2 e2``: one span from the first start to the last end;
- surface strings with surrounding whitespace: the span is shrunk to its non-space core;
- ``T`` ids out of offset order: mentions are sorted by (begin, end, label);
- mentions across a line break, nested and identical-span mentions: kept as they are; flattening
  (``medner_udf.text.scheme``) decides what a flat tagger can learn.

A malformed line raises ``CorpusError`` naming the file and line number, never the note's words.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medner_udf.errors import MednerUsageError
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


class CorpusError(MednerUsageError, ValueError):
    """A corpus file that cannot be read as brat standoff; the message names file and line number."""


class CorpusNotFoundError(MednerUsageError, FileNotFoundError):
    """The corpus folder does not exist; the hint says where to put it or how to point at it."""


CORPUS_HINT = (
    f"put MACCROBAT2020 at {DEFAULT_CORPUS} (beside the checkout), "
    f"or set --corpus or {CORPUS_ENV} to its folder"
)


# Assertion status of a mention from the POLARITY attribute of its event (absent when none):
# absent = NEG and MAYBE_NEG, possible = UNCERTAIN and MAYBE_POS, present otherwise (docs/clinical.md).
ASSERTIONS = ("present", "absent", "possible")
PRESENT = "present"
ASSERTION_OF_POLARITY = {
    "NEG": "absent",
    "MAYBE_NEG": "absent",
    "UNCERTAIN": "possible",
    "MAYBE_POS": "possible",
    "POS": "present",
}
# When two events on one mention disagree, the more informative status wins (never seen in MACCROBAT).
_ASSERTION_RANK = {"present": 0, "possible": 1, "absent": 2}


@dataclass(frozen=True, slots=True, order=True)
class Relation:
    """A directed relation between two mentions: brat's ``Arg1`` is the head, ``Arg2`` the tail."""

    head: Span
    tail: Span
    type: str


@dataclass(frozen=True, slots=True, order=True)
class Attribute:
    """An ``A`` line: attribute ``name`` (POLARITY, TREND) with ``value`` on the mention ``target``
    (an event's trigger)."""

    target: Span
    name: str
    value: str


@dataclass(frozen=True)
class Document:
    """One note with its gold mentions (character offsets into ``text``, end exclusive).

    ``assertions`` is aligned with ``mentions`` (empty when the document carries no assertion
    annotations; ``assertion_labels`` then says ``present`` for every mention).
    """

    doc_id: str
    text: str
    mentions: tuple[Span, ...] = ()
    # How many of the .ann file's T mentions were discontinuous (joined into one span).
    n_discontinuous: int = 0
    other_lines: Counter[str] = field(default_factory=Counter)
    assertions: tuple[str, ...] = ()
    relations: tuple[Relation, ...] = ()
    attributes: tuple[Attribute, ...] = ()
    # Event trigger mentions (``E`` lines), and the ``*`` equivalence sets (OVERLAP) as mention sets.
    events: tuple[Span, ...] = ()
    overlaps: tuple[tuple[Span, ...], ...] = ()

    def __post_init__(self) -> None:
        if self.assertions and len(self.assertions) != len(self.mentions):
            raise ValueError(
                f"document {self.doc_id}: {len(self.assertions)} assertions for {len(self.mentions)} mentions"
            )
        unknown = set(self.assertions) - set(ASSERTIONS)
        if unknown:
            raise ValueError(f"document {self.doc_id}: assertions {sorted(unknown)} not in {ASSERTIONS}")

    @property
    def assertion_labels(self) -> tuple[str, ...]:
        """The assertion status of each mention, aligned with ``mentions``."""
        return self.assertions or (PRESENT,) * len(self.mentions)


@dataclass(frozen=True)
class Annotations:
    """Everything one ``.ann`` file says about its text (see the module doc)."""

    mentions: tuple[Span, ...]
    n_discontinuous: int
    other_lines: Counter[str]
    assertions: tuple[str, ...]
    relations: tuple[Relation, ...]
    attributes: tuple[Attribute, ...]
    events: tuple[Span, ...]
    overlaps: tuple[tuple[Span, ...], ...]
    # References to mentions that were skipped (whitespace-only): dropped, and counted here.
    n_dropped_references: int = 0


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


def _parse_t_line(line: str, text: str, where: str) -> tuple[str, Span | None, bool]:
    """(id, stripped span or None when whitespace-only, discontinuous?) of a ``T`` line."""
    # maxsplit=2: the surface string may itself hold a tab (the stray field in 25661749 T145).
    parts = line.split("\t", 2)
    if len(parts) < 2:
        raise CorpusError(f"{where}: T line has no type/offsets field")
    type_and_offsets = parts[1].split(" ", 1)
    if len(type_and_offsets) != 2:
        raise CorpusError(f"{where}: T line has no offsets")
    label, offsets = type_and_offsets
    begin, end, discontinuous = _parse_offsets(offsets, where)
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
        return parts[0].strip(), None, discontinuous
    return parts[0].strip(), Span(begin, end, label), discontinuous


def _fields(line: str, where: str, kind: str, minimum: int) -> list[str]:
    """The space-separated words of the second tab field of an ``E``/``A``/``R``/``*`` line."""
    parts = line.split("\t", 2)
    words = parts[1].split() if len(parts) > 1 else []
    if len(words) < minimum:
        raise CorpusError(f"{where}: {kind} line needs at least {minimum} fields, got {len(words)}")
    return words


def parse_annotations(ann: str, text: str, doc_id: str = "?") -> Annotations:
    """Parse every line of a brat ``.ann`` file against its text (see the module doc).

    ``T`` and ``E`` lines are read first, so a line may refer to an id defined further down. Raises
    CorpusError for a malformed line, a span outside the text, or a reference to an id the file does
    not define; messages name the file and line, never the note's words.
    """
    lines = [(n, line) for n, line in enumerate(ann.splitlines(), start=1) if line.strip()]
    others: Counter[str] = Counter(line[0] for _, line in lines if line[0] != "T")
    spans: set[Span] = set()
    by_id: dict[str, Span | None] = {}  # T and E ids -> mention span (None: a skipped mention)
    n_discontinuous = 0
    for lineno, line in lines:
        if line[0] == "T":
            tid, span, discontinuous = _parse_t_line(line, text, f"{doc_id}.ann line {lineno}")
            n_discontinuous += discontinuous
            by_id[tid] = span
            if span is not None:
                spans.add(span)
    events: set[Span] = set()
    for lineno, line in lines:
        if line[0] == "E":
            where = f"{doc_id}.ann line {lineno}"
            # "E1<TAB>Sign_symptom:T4": the trigger is the first word; MACCROBAT's events have no
            # other arguments.
            trigger = _fields(line, where, "E", 1)[0].rpartition(":")[2]
            if trigger not in by_id or not trigger.startswith("T"):
                raise CorpusError(f"{where}: event trigger {trigger!r} is not a T id of this file")
            span = by_id[trigger]
            by_id[line.split("\t", 1)[0].strip()] = span
            if span is not None:
                events.add(span)

    n_dropped = 0

    def resolve(ref: str, where: str) -> Span | None:
        nonlocal n_dropped
        if ref not in by_id:
            raise CorpusError(f"{where}: {ref!r} is not a T or E id of this file")
        span = by_id[ref]
        n_dropped += span is None
        return span

    assertion_of: dict[Span, str] = {}
    attributes: set[Attribute] = set()
    relations: set[Relation] = set()
    overlaps: list[tuple[Span, ...]] = []
    for lineno, line in lines:
        where = f"{doc_id}.ann line {lineno}"
        kind = line[0]
        if kind == "A" or kind == "M":  # M: the older brat name for attributes
            words = _fields(line, where, "A", 2)
            name, target_id = words[0], words[1]
            value = words[2] if len(words) > 2 else "true"  # a binary attribute has no value
            target = resolve(target_id, where)
            if target is None:
                continue
            attributes.add(Attribute(target, name, value))
            if name == "POLARITY":
                if value not in ASSERTION_OF_POLARITY:
                    raise CorpusError(
                        f"{where}: POLARITY value {value!r} is not one of {sorted(ASSERTION_OF_POLARITY)}"
                    )
                status = ASSERTION_OF_POLARITY[value]
                previous = assertion_of.get(target, PRESENT)
                if _ASSERTION_RANK[status] >= _ASSERTION_RANK[previous]:
                    assertion_of[target] = status
        elif kind == "R":
            words = _fields(line, where, "R", 3)
            args = dict(word.partition(":")[::2] for word in words[1:])
            if "Arg1" not in args or "Arg2" not in args:
                raise CorpusError(f"{where}: R line needs Arg1:<id> and Arg2:<id>")
            head, tail = resolve(args["Arg1"], where), resolve(args["Arg2"], where)
            if head is not None and tail is not None:
                relations.add(Relation(head, tail, words[0]))
        elif kind == "*":
            words = _fields(line, where, "*", 3)
            members = [resolve(ref, where) for ref in words[1:]]
            overlaps.append(tuple(sorted({m for m in members if m is not None})))
    if n_dropped:
        log.warning("%s.ann: %d references to skipped mentions dropped", doc_id, n_dropped)
    mentions = tuple(sorted(spans))
    return Annotations(
        mentions=mentions,
        n_discontinuous=n_discontinuous,
        other_lines=others,
        assertions=tuple(assertion_of.get(m, PRESENT) for m in mentions),
        relations=tuple(sorted(relations)),
        attributes=tuple(sorted(attributes)),
        events=tuple(sorted(events)),
        overlaps=tuple(overlaps),
        n_dropped_references=n_dropped,
    )


def parse_ann(ann: str, text: str, doc_id: str = "?") -> tuple[list[Span], int, Counter[str]]:
    """The mentions of a brat ``.ann`` file: (mentions sorted by offset, number of discontinuous
    mentions, counts of the other line kinds). See ``parse_annotations`` for everything else."""
    parsed = parse_annotations(ann, text, doc_id)
    return list(parsed.mentions), parsed.n_discontinuous, parsed.other_lines


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
    parsed = parse_annotations(ann, text, txt_path.stem)
    return Document(
        txt_path.stem,
        text,
        parsed.mentions,
        parsed.n_discontinuous,
        parsed.other_lines,
        assertions=parsed.assertions,
        relations=parsed.relations,
        attributes=parsed.attributes,
        events=parsed.events,
        overlaps=parsed.overlaps,
    )


def read_corpus(root: Path | str, split: str = "all", ids: Iterable[str] | None = None) -> list[Document]:
    """Read the documents of one split (``train``, ``dev``, ``test`` or ``all``), sorted by id."""
    root = Path(root)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not root.is_dir():
        raise CorpusNotFoundError(f"corpus folder {root} does not exist", hint=CORPUS_HINT)
    available = {p.stem: p for p in root.glob("*.txt") if p.with_suffix(".ann").exists()}
    if not available:
        raise CorpusError(f"{root} holds no .txt/.ann pairs", hint=CORPUS_HINT)
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

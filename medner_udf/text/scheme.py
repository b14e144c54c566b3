"""The BIOES tag scheme: flattening gold mentions to token tags, tags back to spans, and the
transition constraints that keep Viterbi from decoding an invalid sequence.

Why BIOES rather than BIO: it marks single-token mentions (``S-``) and mention ends (``E-``)
explicitly, which Ratinov & Roth (2009) and Ma & Hovy (2016) found slightly better, and which makes
every valid sequence unambiguous to read back as spans. With a CRF the extra tags cost nothing at
inference. Scores are always computed on character spans, so the scheme is an internal choice.

Overlap policy: a flat tagger can give each token one tag, so nested/overlapping gold mentions must
be reduced to a non-overlapping subset for training. Two policies (``flatten``):

- ``longest``: the **longest mention first** (ties: earlier start, then label name), then every
  mention that does not overlap one already kept. It keeps the outer phrase ("severe chest pain"
  over "chest pain"). On MACCROBAT it drops 478 of 25,189 mentions (1.9%). The seqeval figure and
  the confusion matrix flatten this way.
- ``most``: **as many mentions as possible** (earliest end first). MACCROBAT's nesting is mostly a
  ``History`` mention wrapping several others ("history of [hypertension] and [diabetes]"), so this
  keeps the inner ones and drops the wrapper: 223 instead of 363 training mentions dropped. The
  BiLSTM-CNN-CRF trains with it (chosen on dev; ``docs/training.md``).

``flatten`` reports what it drops, and evaluation always scores against all gold mentions, so the
loss shows in recall rather than being hidden.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from medner_udf.text.types import Span, Token

OUTSIDE = "O"
PREFIXES = ("B", "I", "E", "S")


def tag_set(entity_types: Sequence[str]) -> list[str]:
    """``O`` then B/I/E/S for each type, types sorted so the tag ids do not depend on input order."""
    types = sorted(set(entity_types))
    if not types:
        raise ValueError("need at least one entity type")
    if any("-" in t[:2] or not t for t in types):
        raise ValueError(f"entity type names must be non-empty and not start with a prefix: {types}")
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in PREFIXES]


def entity_types_of(tags: Sequence[str]) -> list[str]:
    return sorted({t[2:] for t in tags if t != OUTSIDE})


@dataclass(frozen=True)
class Flattened:
    kept: list[Span]
    dropped: list[Span]


OVERLAP_POLICIES = ("longest", "most")


def flatten(mentions: Sequence[Span], policy: str = "longest") -> Flattened:
    """Reduce mentions to a non-overlapping subset.

    ``longest`` (the module doc's policy): longest mention first, then whatever does not overlap.
    ``most``: the largest possible number of mentions (interval scheduling: earliest end first, and
    of two mentions ending together the shorter), so an outer mention that wraps several inner ones
    ("history of [hypertension] and [diabetes]") gives way to them.
    """
    if policy == "longest":
        order = sorted(mentions, key=lambda s: (-(s.end - s.begin), s.begin, s.label))
    elif policy == "most":
        order = sorted(mentions, key=lambda s: (s.end, -s.begin, s.label))
    else:
        raise ValueError(f"overlap policy must be one of {OVERLAP_POLICIES}, got {policy!r}")
    kept: list[Span] = []
    dropped: list[Span] = []
    for span in order:
        if any(span.begin < k.end and k.begin < span.end for k in kept):
            dropped.append(span)
        else:
            kept.append(span)
    return Flattened(sorted(kept), sorted(dropped))


def spans_to_tags(tokens: Sequence[Token], spans: Sequence[Span]) -> list[str]:
    """BIOES tags for ``tokens`` from non-overlapping character spans.

    A span covers every token it overlaps; a mention boundary inside a token (rare: 26 of 25,189 in
    MACCROBAT) thus widens to the token boundary. Spans touching no token are ignored.
    """
    tags = [OUTSIDE] * len(tokens)
    starts = np.fromiter((t.begin for t in tokens), dtype=np.int64, count=len(tokens))
    ends = np.fromiter((t.end for t in tokens), dtype=np.int64, count=len(tokens))
    for span in spans:
        first = int(np.searchsorted(ends, span.begin, side="right"))
        last = int(np.searchsorted(starts, span.end, side="left")) - 1
        if first > last:
            continue
        if any(tags[i] != OUTSIDE for i in range(first, last + 1)):
            raise ValueError("spans_to_tags needs non-overlapping spans; flatten them first")
        if first == last:
            tags[first] = f"S-{span.label}"
        else:
            tags[first] = f"B-{span.label}"
            for i in range(first + 1, last):
                tags[i] = f"I-{span.label}"
            tags[last] = f"E-{span.label}"
    return tags


def tags_to_token_spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(first token, last token + 1, type) for each mention in a tag sequence.

    Lenient on invalid sequences (which constrained decoding never produces, but a softmax head can):
    an ``I``/``E`` that does not continue an open mention of its type starts a new one, and a
    mention left open is closed where its type stops.
    """
    out: list[tuple[int, int, str]] = []
    open_start: int | None = None
    open_type = ""
    for i, tag in enumerate(tags):
        prefix, _, etype = tag.partition("-")
        continues = open_start is not None and etype == open_type and prefix in ("I", "E")
        if not continues and open_start is not None:
            out.append((open_start, i, open_type))
            open_start = None
        if tag == OUTSIDE:
            continue
        if prefix == "S":
            out.append((i, i + 1, etype))
        elif prefix == "E":
            out.append((i if open_start is None else open_start, i + 1, etype))
            open_start = None
        elif continues:
            pass
        else:  # B, or an I/E with nothing to continue
            open_start, open_type = i, etype
    if open_start is not None:
        out.append((open_start, len(tags), open_type))
    return out


def allowed_transitions(
    tags: Sequence[str],
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Masks (start, transitions[from, to], end) of the moves a valid BIOES sequence may make."""
    n = len(tags)
    parsed = [(t, "") if t == OUTSIDE else (t[0], t[2:]) for t in tags]
    start = np.array([p in (OUTSIDE, "B", "S") for p, _ in parsed])
    end = np.array([p in (OUTSIDE, "E", "S") for p, _ in parsed])
    trans = np.zeros((n, n), dtype=bool)
    for i, (pi, ti) in enumerate(parsed):
        for j, (pj, tj) in enumerate(parsed):
            if pi in (OUTSIDE, "E", "S"):  # outside a mention: may stay out or open one
                trans[i, j] = pj in (OUTSIDE, "B", "S")
            else:  # inside a mention of type ti: must continue or close it
                trans[i, j] = pj in ("I", "E") and tj == ti
    return start, trans, end


@dataclass(frozen=True)
class TagCodes:
    """A tag list as arrays: each tag's prefix (0 O, 1 B, 2 I, 3 E, 4 S) and its type index (-1 for
    O) into ``types``."""

    prefix: npt.NDArray[np.int8]
    type_index: npt.NDArray[np.int64]
    types: tuple[str, ...]

    @classmethod
    def of(cls, tags: Sequence[str]) -> TagCodes:
        types = tuple(entity_types_of(tags))
        position = {t: i for i, t in enumerate(types)}
        prefix = np.array([0 if t == OUTSIDE else "OBIES".index(t[0]) for t in tags], dtype=np.int8)
        type_index = np.array([-1 if t == OUTSIDE else position[t[2:]] for t in tags], dtype=np.int64)
        return cls(prefix, type_index, types)


def paths_to_spans(
    paths: npt.NDArray[np.int64], lengths: npt.NDArray[np.int64], codes: TagCodes
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(row, first, last, type index) of every mention in a batch of tag paths, all at once;
    ``last`` inclusive, row-major order: ``tags_to_token_spans`` of each row, as arrays.

    A valid BIOES path (a constrained CRF's always is) reads as written; an invalid one (a softmax
    head's can be: ``O I-X``) reads as ``tags_to_token_spans`` reads it. Whether a mention is open
    after a step depends on that step alone (B and I leave one open; O, E and S do not), so:

    - step i *continues* when it is I or E, the step before left a mention open, and both have the
      same type;
    - a mention *starts* at every B or S and at every I or E that does not continue;
    - a mention *ends* at every E or S, and at every B or I whose next step does not continue.

    Starts and ends alternate along each row, so the k-th start and the k-th end of the batch
    belong to the same mention.
    """
    steps = np.arange(paths.shape[1])[None, :]
    live = steps < lengths[:, None]
    prefix = np.where(live, codes.prefix[paths], 0)  # 0 O, 1 B, 2 I, 3 E, 4 S; padding reads O
    kind = codes.type_index[paths]
    inside = (prefix == 2) | (prefix == 3)
    open_after = (prefix == 1) | (prefix == 2)
    continues = np.zeros_like(inside)
    continues[:, 1:] = inside[:, 1:] & open_after[:, :-1] & (kind[:, 1:] == kind[:, :-1])
    starts = (prefix == 1) | (prefix == 4) | (inside & ~continues)
    next_continues = np.zeros_like(continues)
    next_continues[:, :-1] = continues[:, 1:]
    ends = (prefix == 3) | (prefix == 4) | (open_after & ~next_continues)
    start_rows, first = np.nonzero(starts)
    _, last = np.nonzero(ends)
    return start_rows, first, last, kind[start_rows, first]

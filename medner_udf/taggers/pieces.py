"""Sub-word pieces of whole notes from a fast tokenizer, without tokenising the same text twice.

A WordPiece tokenizer with BERT's normalizer and pre-tokenizer (the BERT, DistilBERT, MiniLM and
MPNet checkpoints) tokenises every whitespace-separated chunk of a note on its own: the normalizer
maps characters one by one, the pre-tokenizer splits at whitespace (and punctuation), and WordPiece
works inside each pre-token. The pieces of a note are therefore the pieces of its chunks, in order,
with the chunk's offsets shifted to where the chunk is. Clinical notes repeat their chunks (200
MACCROBAT notes: 83,404 chunks, 15,481 distinct), so ``ChunkPieces`` tokenises each distinct chunk
once (all new chunks of a call in one tokenizer call, joined by spaces), keeps their pieces in a
table bounded by chunk count and characters, and assembles each note's piece ids and offsets with
array gathers. The result is exactly the tokenizer's own for the whole note
(``tests/test_taggers_host_path.py`` checks it on the corpus and on hostile text).

Other tokenizers (byte-level BPE and SentencePiece, whose pieces carry the space before a word) and
notes that contain an added token's text literally (``[SEP]``, ``<mask>``: added tokens are
matched before pre-tokenisation and may absorb neighbouring spaces) are tokenised note by note.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from medner_udf.text.tokens import codepoints

IntArray = npt.NDArray[np.int64]

# Where chunks are cut: characters that every BERT-style pre-tokenizer splits at and that the
# normalizer never removes (tab, line feed, carriage return, space).
_CUTS = np.zeros(34, dtype=bool)  # index 33: every code point above the space
_CUTS[[9, 10, 13, 32]] = True


def chunked_encoding_is_exact(backend: Any) -> bool:
    """Whether ``backend`` (a ``tokenizers.Tokenizer``) tokenises whitespace-separated chunks
    independently: BERT's normalizer (or none), BERT's pre-tokenizer and a WordPiece model."""
    config = json.loads(backend.to_str())
    normalizer = config.get("normalizer")
    pre_tokenizer = config.get("pre_tokenizer") or {}
    model = config.get("model") or {}
    return (
        (normalizer is None or normalizer.get("type") == "BertNormalizer")
        and pre_tokenizer.get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
    )


class _Column:
    """A growable int64 array (amortised doubling)."""

    def __init__(self) -> None:
        self.data = np.zeros(1024, dtype=np.int64)
        self.size = 0

    def extend(self, values: IntArray) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.zeros(max(end, 2 * len(self.data)), dtype=np.int64)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self) -> IntArray:
        return self.data[: self.size]


class ChunkPieces:
    """Piece ids and character offsets of whole notes (see the module doc).

    ``encode(texts)`` returns, for each note, ``(ids, offsets)``: what
    ``backend.encode(text, add_special_tokens=False)`` gives as ``ids`` and ``offsets`` (n, 2), with
    truncation and padding switched off on ``backend``.
    The table of known chunks is cleared when it would pass ``max_chunks`` chunks or ``max_chars``
    characters, so a worker's memory stays bounded whatever it tags.
    """

    def __init__(self, backend: Any, max_chunks: int = 1 << 17, max_chars: int = 4 << 20) -> None:
        # Whole notes, as the tokenizer's __call__ gives them without truncation or padding asked
        # for (a checkpoint's saved truncation would otherwise cut every note, and the joined chunks).
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.chunked = chunked_encoding_is_exact(backend)
        self.max_chunks, self.max_chars = max_chunks, max_chars
        added = json.loads(backend.to_str()).get("added_tokens") or []
        self._added = [str(t["content"]) for t in added if t.get("content")]
        self._reset()

    def _reset(self) -> None:
        self._index: dict[str, int] = {}
        self._chars = 0
        self._first, self._count = _Column(), _Column()
        self._ids, self._begins, self._ends = _Column(), _Column(), _Column()

    def __len__(self) -> int:
        """Chunks in the table."""
        return len(self._index)

    def _whole(self, text: str) -> tuple[IntArray, IntArray]:
        encoding = self.backend.encode(text, add_special_tokens=False)
        ids = np.asarray(encoding.ids, dtype=np.int64)
        return ids, np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)

    def _add(self, chunks: list[str]) -> None:
        """Tokenise ``chunks`` (new, distinct) in one call and append their pieces to the table."""
        starts = np.cumsum([0] + [len(c) + 1 for c in chunks[:-1]]).astype(np.int64)
        ids, offsets = self._whole(" ".join(chunks))
        owner = np.searchsorted(starts, offsets[:, 0], side="right") - 1
        count = np.bincount(owner, minlength=len(chunks)).astype(np.int64)
        self._first.extend(self._ids.size + np.cumsum(count) - count)
        self._count.extend(count)
        self._ids.extend(ids)
        self._begins.extend(offsets[:, 0] - starts[owner])
        self._ends.extend(offsets[:, 1] - starts[owner])
        base = len(self._index)
        self._index.update(zip(chunks, range(base, base + len(chunks)), strict=True))
        self._chars += sum(len(c) for c in chunks)

    def encode(self, texts: Sequence[str]) -> list[tuple[IntArray, IntArray]]:
        if not self.chunked:
            return [self._whole(text) for text in texts]
        out: list[tuple[IntArray, IntArray] | None] = [None] * len(texts)
        chunked: list[tuple[int, IntArray, list[str]]] = []
        for i, text in enumerate(texts):
            if any(token in text for token in self._added):
                out[i] = self._whole(text)
                continue
            points = codepoints(text)
            cut = np.zeros(len(points) + 2, dtype=bool)
            cut[0] = cut[-1] = True
            cut[1:-1] = _CUTS[np.minimum(points, 33)]
            starts = np.flatnonzero(~cut[1:-1] & cut[:-2])
            ends = np.flatnonzero(~cut[1:-1] & cut[2:]) + 1
            chunked.append(
                (i, starts, [text[a:b] for a, b in zip(starts.tolist(), ends.tolist(), strict=True)])
            )
        index = self._index
        new = list(dict.fromkeys(c for _, _, chunks in chunked for c in chunks if c not in index))
        if new and (
            len(index) + len(new) > self.max_chunks or self._chars + sum(map(len, new)) > self.max_chars
        ):
            self._reset()
            index = self._index
            new = list(dict.fromkeys(c for _, _, chunks in chunked for c in chunks))
        if new:
            self._add(new)
        first, count = self._first.view(), self._count.view()
        ids, begins, ends = self._ids.view(), self._begins.view(), self._ends.view()
        for i, starts, chunks in chunked:
            rows = np.array([index[c] for c in chunks], dtype=np.int64)
            n = count[rows]
            before = np.cumsum(n) - n
            piece = np.repeat(first[rows] - before, n) + np.arange(int(n.sum()), dtype=np.int64)
            shift = np.repeat(starts, n)
            out[i] = ids[piece], np.stack([begins[piece] + shift, ends[piece] + shift], axis=1)
        assert all(o is not None for o in out), "every note is encoded one way or the other"
        return [o for o in out if o is not None]

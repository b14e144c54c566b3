"""The BiLSTM-CNN-CRF tagger: vocabularies, encoding, batched inference, and its artifact."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch

from medner_udf.models.bilstm_cnn_crf import PAD, UNK, BiLstmCnnCrf, BiLstmCnnCrfConfig
from medner_udf.taggers.artifact import ArtifactError, ArtifactInfo, read_json, write_json
from medner_udf.taggers.base import Tagger
from medner_udf.taggers.neural import EmissionBatch, NeuralTagger
from medner_udf.text.tokens import DEFAULT_MAX_SEGMENT_TOKENS, Segments, codepoints, segment, segment_bounds
from medner_udf.text.types import Token

VOCAB_FILE = "vocab.json"
KIND = "bilstm-cnn-crf"


def word_key(token: str) -> str:
    """GloVe 6B is lowercased; so is every word-vocabulary lookup."""
    return token.lower()


class Vocabulary:
    """An id space with PAD=0 and UNK=1 followed by ``items``."""

    def __init__(self, items: Sequence[str]) -> None:
        self.items = list(items)
        self.index = {item: i + 2 for i, item in enumerate(self.items)}
        if len(self.index) != len(self.items):
            raise ValueError("vocabulary items must be unique")

    def __len__(self) -> int:
        return len(self.items) + 2

    def get(self, item: str) -> int:
        return self.index.get(item, UNK)


class Encoded:
    """A padded batch of segments, as tensors."""

    def __init__(self, words: torch.Tensor, tuned: torch.Tensor, chars: torch.Tensor, mask: torch.Tensor):
        self.words, self.tuned, self.chars, self.mask = words, tuned, chars, mask

    def to(self, device: torch.device) -> Encoded:
        return Encoded(
            *(t.to(device, non_blocking=True) for t in (self.words, self.tuned, self.chars, self.mask))
        )


@dataclass(frozen=True)
class _EncodedNotes:
    """The tokens of every note of a ``tag`` call as flat arrays (token k: ``begins[k]:ends[k]`` in
    its note, its ids), and the segments as ranges of them (segment s: tokens
    ``segment_start[s]:segment_stop[s]`` of note ``segment_note[s]``)."""

    begins: npt.NDArray[np.int64]
    ends: npt.NDArray[np.int64]
    words: npt.NDArray[np.int64]
    tuned: npt.NDArray[np.int64]
    chars: npt.NDArray[np.int64]  # (tokens, max_word_chars)
    segment_note: npt.NDArray[np.int64]
    segment_start: npt.NDArray[np.int64]
    segment_stop: npt.NDArray[np.int64]
    note_start: npt.NDArray[np.int64]  # (notes + 1,): note n's tokens are note_start[n]:note_start[n + 1]


@Tagger.register(KIND)
class BiLstmCnnCrfTagger(NeuralTagger):
    """Tags notes segment by segment (lines, long lines cut, optionally packed) with a BiLSTM-CNN-CRF."""

    config_class = BiLstmCnnCrfConfig
    default_batch_size = 64  # segments per forward pass
    net: BiLstmCnnCrf

    def __init__(
        self,
        info: ArtifactInfo,
        net: BiLstmCnnCrf,
        words: Vocabulary,
        tuned_words: Vocabulary,
        chars: Vocabulary,
        max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
        pack_lines: bool = False,
    ) -> None:
        super().__init__(info, net)
        cfg = net.config
        for what, vocab, expected in (
            ("word", words, cfg.num_words),
            ("tuned word", tuned_words, cfg.num_tuned_words),
            ("char", chars, cfg.num_chars),
        ):
            if len(vocab) != expected:
                raise ArtifactError(
                    f"{what} vocabulary has {len(vocab)} ids but the model config expects {expected}"
                )
        self.words, self.tuned_words, self.chars = words, tuned_words, chars
        # Segmentation is part of the model: it must be the same at inference as in training.
        self.max_segment_tokens = max_segment_tokens
        self.pack_lines = pack_lines

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        version: str,
        tags: Sequence[str],
        train_tokens: Sequence[Sequence[Token]],
        glove_words: Sequence[str],
        glove_vectors: npt.NDArray[np.float32],
        config: BiLstmCnnCrfConfig | None = None,
        *,
        min_char_count: int = 1,
        glove_limit: int | None = None,
        max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
        pack_lines: bool = False,
        **subclass_args: Any,
    ) -> Self:
        """A fresh (untrained) tagger: ``config``'s hyperparameters bound to vocabularies from the
        training tokens and GloVe, and to ``tags``.

        ``glove_words``/``glove_vectors`` are the whole GloVe table in its frequency order; the
        artifact carries its first ``glove_limit`` rows (all when None) plus the row of every
        training word GloVe knows beyond that cut, so no training word loses its vector.
        ``subclass_args`` go to a subclass's constructor (a stacked tagger's encoder).
        """
        word_counts = Counter(word_key(t.text) for toks in train_tokens for t in toks)
        char_counts = Counter(ch for toks in train_tokens for t in toks for ch in t.text)
        glove_index = {w: i for i, w in enumerate(glove_words)}
        cut = len(glove_words) if glove_limit is None else min(glove_limit, len(glove_words))
        extra = sorted(w for w in word_counts if w in glove_index and glove_index[w] >= cut)
        words = Vocabulary(list(glove_words[:cut]) + extra)
        tuned = Vocabulary(sorted(word_counts))
        chars = Vocabulary(sorted(c for c, n in char_counts.items() if n >= min_char_count))
        bound = replace(
            config or BiLstmCnnCrfConfig(),
            tags=tuple(tags),
            num_words=len(words),
            num_tuned_words=len(tuned),
            num_chars=len(chars),
            word_dim=int(glove_vectors.shape[1]),
        )
        net = BiLstmCnnCrf(bound)
        table = np.zeros((len(words), bound.word_dim), dtype=np.float32)
        table[2 : 2 + cut] = glove_vectors[:cut]
        for i, w in enumerate(extra):
            table[2 + cut + i] = glove_vectors[glove_index[w]]
        net.set_pretrained(torch.from_numpy(table))
        info = ArtifactInfo(kind=cls.kind, name=name, version=version, tags=list(tags))
        return cls(info, net, words, tuned, chars, max_segment_tokens, pack_lines, **subclass_args)

    # ----------------------------------------------------------------------------------------------
    def encode(
        self,
        segments: Sequence[Sequence[Token]],
        word_dropout: float = 0.0,
        rng: np.random.Generator | None = None,
    ) -> Encoded:
        """Pad a batch of token segments into id tensors (on the CPU)."""
        if not segments or any(len(s) == 0 for s in segments):
            raise ValueError("encode needs a non-empty list of non-empty segments")
        batch, seq_len = len(segments), max(len(s) for s in segments)
        max_chars = self.config.max_word_chars
        word_chars = min(max_chars, max(len(t.text) for s in segments for t in s))
        # The CNN needs at least kernel-width positions to see a whole window.
        word_chars = max(word_chars, self.config.char_kernel)
        words = np.zeros((batch, seq_len), dtype=np.int64)
        tuned = np.zeros((batch, seq_len), dtype=np.int64)
        chars = np.zeros((batch, seq_len, word_chars), dtype=np.int64)
        mask = np.zeros((batch, seq_len), dtype=bool)
        for b, seg in enumerate(segments):
            for i, tok in enumerate(seg):
                key = word_key(tok.text)
                words[b, i] = self.words.get(key)
                tuned[b, i] = self.tuned_words.get(key)
                for j, ch in enumerate(tok.text[:word_chars]):
                    chars[b, i, j] = self.chars.get(ch)
            mask[b, : len(seg)] = True
        if word_dropout > 0.0:
            # Train the network to work from the frozen vector alone, as it must for unseen words.
            gen = rng or np.random.default_rng()
            drop = (gen.random((batch, seq_len)) < word_dropout) & mask
            tuned[drop] = UNK
        return Encoded(
            torch.from_numpy(words),
            torch.from_numpy(tuned),
            torch.from_numpy(chars),
            torch.from_numpy(mask),
        )

    def encode_tags(self, tag_rows: Sequence[Sequence[str]]) -> torch.Tensor:
        index = {t: i for i, t in enumerate(self.info.tags)}
        out = np.zeros((len(tag_rows), max(len(r) for r in tag_rows)), dtype=np.int64)
        for b, row in enumerate(tag_rows):
            try:
                out[b, : len(row)] = [index[t] for t in row]
            except KeyError as exc:
                raise ValueError(f"tag {exc.args[0]!r} is not in the model's tag set") from exc
        return torch.from_numpy(out)

    def segments(self, text: str) -> list[list[Token]]:
        """The token segments the network sees for ``text`` (as in training)."""
        return segment(text, self.max_segment_tokens, self.pack_lines)

    def _char_ids(self, points: npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
        """The character vocabulary's id of each code point (``chars.get`` for each character)."""
        table: npt.NDArray[np.int64] | None = getattr(self, "_bmp_char_ids", None)
        if table is None:
            table = np.full(0x10000, UNK, dtype=np.int64)
            for ch, i in self.chars.index.items():
                if ord(ch) < 0x10000:
                    table[ord(ch)] = i
            self._bmp_char_ids = table
        ids = table[np.minimum(points, 0xFFFF)]
        high = np.flatnonzero(points > 0xFFFF)
        if high.size:
            ids[high] = [self.chars.get(chr(int(c))) for c in points[high]]
        return ids

    def _encode_notes(self, texts: Sequence[str]) -> _EncodedNotes:
        """Every note's segments with the word, tuned-word and character ids of all its tokens, as
        flat arrays over the whole call (what ``encode`` computes batch by batch, token by token)."""
        width = self.config.max_word_chars
        words_get, tuned_get = self.words.index.get, self.tuned_words.index.get
        parts: list[tuple[Segments, list[int], list[int], npt.NDArray[np.int64]]] = []
        for text in texts:
            segs = segment_bounds(text, self.max_segment_tokens, self.pack_lines)
            keys = [text[b:e].lower() for b, e in zip(segs.begins.tolist(), segs.ends.tolist(), strict=True)]
            points = codepoints(text)
            # shape: (tokens, width): the first characters of each token, PAD after its end
            at = segs.begins[:, None] + np.arange(width)[None, :]
            inside = at < segs.ends[:, None]
            chars = np.where(inside, self._char_ids(points)[np.minimum(at, max(len(points) - 1, 0))], PAD)
            parts.append((segs, [words_get(k, UNK) for k in keys], [tuned_get(k, UNK) for k in keys], chars))
        offsets = np.cumsum([0] + [len(p[0].begins) for p in parts])
        return _EncodedNotes(
            begins=np.concatenate([p[0].begins for p in parts] + [np.zeros(0, np.int64)]),
            ends=np.concatenate([p[0].ends for p in parts] + [np.zeros(0, np.int64)]),
            words=np.array([w for p in parts for w in p[1]], dtype=np.int64),
            tuned=np.array([w for p in parts for w in p[2]], dtype=np.int64),
            chars=np.concatenate([p[3] for p in parts] + [np.zeros((0, width), np.int64)]),
            segment_note=np.array([n for n, p in enumerate(parts) for _ in range(len(p[0]))], dtype=np.int64),
            segment_start=np.concatenate(
                [p[0].starts + offsets[n] for n, p in enumerate(parts)] + [np.zeros(0, np.int64)]
            ),
            segment_stop=np.concatenate(
                [p[0].stops + offsets[n] for n, p in enumerate(parts)] + [np.zeros(0, np.int64)]
            ),
            note_start=offsets.astype(np.int64),
        )

    def _context_vectors(self, texts: Sequence[str], notes: _EncodedNotes) -> torch.Tensor | None:
        """Per-token context vectors for a stacked tagger, (tokens of ``notes`` + 1, context_dim)
        with the last row zeros (what padding gathers); None for the plain BiLSTM-CNN-CRF."""
        return None

    def emission_batches(self, texts: Sequence[str], batch_size: int) -> Iterator[EmissionBatch]:
        # Every segment of every note; then sorted by length so each batch pads little.
        notes = self._encode_notes(texts)
        context = self._context_vectors(texts, notes)
        sizes = notes.segment_stop - notes.segment_start
        order = np.argsort(sizes, kind="stable")
        device = self.device
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            seq_len = int(sizes[batch].max())
            at = notes.segment_start[batch][:, None] + np.arange(seq_len)[None, :]  # (batch, seq_len)
            mask = at < notes.segment_stop[batch][:, None]
            at = np.where(mask, at, 0)
            # The character width of the batch, as ``encode`` picks it: its longest token, capped,
            # and at least the CNN's kernel.
            token_len = np.where(mask, notes.ends[at] - notes.begins[at], 0)
            width = max(min(self.config.max_word_chars, int(token_len.max())), self.config.char_kernel)
            words = torch.from_numpy(np.where(mask, notes.words[at], PAD))
            tuned = torch.from_numpy(np.where(mask, notes.tuned[at], PAD))
            chars = torch.from_numpy(np.where(mask[:, :, None], notes.chars[at][:, :, :width], PAD))
            mask_t = torch.from_numpy(mask)
            # Only a stacked network takes context vectors (the padding steps gather the zero row).
            extra = {} if context is None else {"context": context[torch.from_numpy(np.where(mask, at, -1))]}
            emissions, _ = self.net(
                words.to(device),
                tuned.to(device),
                chars.to(device),
                mask_t.to(device),
                **{k: v.to(device) for k, v in extra.items()},
            )
            yield EmissionBatch(
                emissions,
                mask_t.to(device),
                notes.segment_note[batch].tolist(),
                np.where(mask, notes.begins[at], 0),
                np.where(mask, notes.ends[at], 0),
            )

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def build_network(cls, config: BiLstmCnnCrfConfig) -> BiLstmCnnCrf:
        return BiLstmCnnCrf(config)

    def _save_files(self, directory: Path) -> None:
        write_json(
            directory / VOCAB_FILE,
            {
                "words": self.words.items,
                "tuned_words": self.tuned_words.items,
                "chars": self.chars.items,
                "max_segment_tokens": self.max_segment_tokens,
                "pack_lines": self.pack_lines,
            },
        )

    @classmethod
    def _from_artifact(cls, directory: Path, info: ArtifactInfo, net: BiLstmCnnCrf) -> Self:
        return cls(info, net, *cls._read_vocab(directory))

    @staticmethod
    def _read_vocab(directory: Path) -> tuple[Vocabulary, Vocabulary, Vocabulary, int, bool]:
        """The vocabularies and segmentation of an artifact, in the constructor's order."""
        vocab = read_json(directory / VOCAB_FILE)
        if not isinstance(vocab, dict) or not {"words", "tuned_words", "chars"} <= vocab.keys():
            raise ArtifactError(f"{directory / VOCAB_FILE} must hold words, tuned_words and chars lists")
        return (
            Vocabulary(vocab["words"]),
            Vocabulary(vocab["tuned_words"]),
            Vocabulary(vocab["chars"]),
            int(vocab.get("max_segment_tokens", DEFAULT_MAX_SEGMENT_TOKENS)),
            bool(vocab.get("pack_lines", False)),
        )

    @classmethod
    def _config_json(cls, raw: Any, info: ArtifactInfo, where: Path) -> Any:
        # Artifacts written before the config carried its tag list stored only their number.
        if isinstance(raw, dict) and "num_tags" in raw:
            raw = dict(raw)
            n = raw.pop("num_tags")
            if n != len(info.tags):
                raise ArtifactError(
                    f"{where} says num_tags {n} but artifact.json lists {len(info.tags)} tags"
                )
            raw.setdefault("tags", list(info.tags))
        return raw

    @staticmethod
    def _weights_for_saving(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # The frozen GloVe table is most of the artifact; half precision halves it at no measurable
        # cost (its values are ~N(0, 0.4), well inside fp16's precision).
        return {**state, "pretrained.weight": state["pretrained.weight"].half()}

    @staticmethod
    def _weights_for_loading(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {**state, "pretrained.weight": state["pretrained.weight"].float()}

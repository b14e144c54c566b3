"""The transformer tagger: any Hugging Face encoder fine-tuned to tag words of raw notes.

How a note becomes entities:

1. **Words** are ``medner_udf.text.tokens.tokenize`` tokens (the same words every medner tagger tags), so
   entity offsets are word offsets and ``text[begin:end] == entity_text`` holds by construction.
2. **Pieces** come from the fast tokenizer run once over the whole note with
   ``return_offsets_mapping``; each word's *first piece* is the first piece whose character range
   overlaps it. A word the tokenizer drops (a control character, say) gets an ``unk`` piece of its
   own so every word has a prediction; a piece spanning two words (``5mg`` in some vocabularies) is
   shared by both.
3. **Windows**: a note of any length is cut into windows of ``window`` pieces (special tokens
   included) whose starts are ``stride`` pieces apart; each word takes its emissions from the window
   where its first piece has the most context on its shorter side. Nothing is ever truncated.
4. **Decoding** runs over the whole note's stitched word emissions at once, so a CRF head's
   constraints and entity probabilities hold across window seams.

Windows from all notes of a call are sorted by length before batching, so padding stays small.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from medner_udf.models.transformer import TransformerConfig, TransformerTaggerNet
from medner_udf.taggers.artifact import (
    CONFIG_FILE,
    METRICS_FILE,
    WEIGHTS_FILE,
    ArtifactError,
    ArtifactInfo,
    config_from_json,
    read_info,
    read_json,
    write_info,
    write_json,
)
from medner_udf.taggers.base import Tagger, default_device
from medner_udf.taggers.decoding import entities_from_path, sort_entities
from medner_udf.text.scheme import tags_to_token_spans
from medner_udf.text.tokens import segment, tokenize
from medner_udf.text.types import Entity, Token

log = logging.getLogger(__name__)

KIND = "transformer"
TOKENIZER_DIR = "tokenizer"
DEFAULT_BATCH_SIZE = 16  # windows per forward pass
_DECODE_BATCH = 16  # notes per Viterbi / forward-backward pass

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class EncodedNote:
    """A note as the network sees it: its words, its pieces, and where each word starts."""

    words: list[Token]
    piece_ids: IntArray  # shape: (n_pieces,)
    first_piece: IntArray  # shape: (n_words,) index into piece_ids of each word's first piece
    blocks: list[tuple[int, int]]  # word ranges [a, b) windowed independently (scope)

    def piece_bound(self, word: int) -> int:
        """First piece of ``word``; ``n_pieces`` for the position after the last word."""
        return int(self.first_piece[word]) if word < len(self.words) else len(self.piece_ids)

    def block_end(self, word_end: int) -> int:
        """End of the pieces of words [.., word_end): past the next word's first piece, and past
        the last word's first piece even when the two share it (a piece spanning the boundary)."""
        return max(self.piece_bound(word_end), int(self.first_piece[word_end - 1]) + 1)


@dataclass(frozen=True)
class Window:
    """A slice of a note's pieces and the words whose emissions it provides (or is trained on)."""

    note: int
    piece_start: int
    piece_end: int
    word_start: int  # the window provides words [word_start, word_end)
    word_end: int


def window_starts(n_pieces: int, capacity: int, stride: int) -> list[int]:
    """Window starts covering ``n_pieces``: every ``stride``, the last one flush with the end."""
    if n_pieces <= capacity:
        return [0]
    starts = list(range(0, n_pieces - capacity, stride))
    starts.append(n_pieces - capacity)
    return starts


def assign_windows(
    first_piece: IntArray, piece_lo: int, piece_hi: int, capacity: int, stride: int
) -> list[tuple[int, int, int, int]]:
    """(piece_start, piece_end, word_start, word_end) windows over pieces [piece_lo, piece_hi).

    ``first_piece`` holds the first pieces of the block's words (sorted, all inside the range);
    word indices returned are positions in ``first_piece``. Each word goes to the window where
    ``min(pieces to its left, pieces to its right)`` inside the window is largest; with windows of
    equal size this makes each window's words one contiguous run.
    """
    n_words = len(first_piece)
    best_window = np.full(n_words, -1, dtype=np.int64)
    best_context = np.full(n_words, -1, dtype=np.int64)
    bounds = []
    for k, rel in enumerate(window_starts(piece_hi - piece_lo, capacity, stride)):
        start = piece_lo + rel
        end = min(start + capacity, piece_hi)
        bounds.append((start, end))
        inside = (first_piece >= start) & (first_piece < end)
        context = np.minimum(first_piece - start, end - 1 - first_piece)
        better = inside & (context > best_context)
        best_window[better] = k
        best_context[better] = context[better]
    assert (best_window >= 0).all(), "every word's first piece lies in some window"
    out = []
    for k, (start, end) in enumerate(bounds):
        members = np.flatnonzero(best_window == k)
        if members.size == 0:
            continue
        # Contiguity lets a window carry a word range; it holds because contexts are unimodal in
        # the piece position and windows are ordered.
        assert members[-1] - members[0] + 1 == members.size, "window words must be contiguous"
        out.append((start, end, int(members[0]), int(members[-1]) + 1))
    return out


@Tagger.register(KIND)
class TransformerTagger(Tagger):
    """Tags raw notes with a fine-tuned transformer encoder (see the module doc)."""

    def __init__(
        self,
        info: ArtifactInfo,
        net: TransformerTaggerNet,
        tokenizer: Any,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if info.kind != KIND:
            raise ArtifactError(f"artifact kind is {info.kind!r}, expected {KIND!r}")
        if tuple(info.tags) != net.config.tags:
            raise ArtifactError(
                f"artifact.json lists {len(info.tags)} tags but config.json has {net.config.num_tags}, "
                "or they differ in order; the two files come from different models"
            )
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; character offsets "
                "need one (a folder with tokenizer.json)"
            )
        self.info = info
        self.net = net
        self.tokenizer = tokenizer
        self.metrics = metrics
        self._prefix = _first_not_none(tokenizer.cls_token_id, tokenizer.bos_token_id)
        self._suffix = _first_not_none(tokenizer.sep_token_id, tokenizer.eos_token_id)
        self._pad = _first_not_none(tokenizer.pad_token_id, 0)
        self._unk = _first_not_none(tokenizer.unk_token_id, self._pad)
        encoder_config: Any = net.encoder.config
        vocab = int(encoder_config.vocab_size)
        if len(tokenizer) > vocab:
            raise ArtifactError(
                f"tokenizer has {len(tokenizer)} pieces but the encoder embeds only {vocab}; "
                "tokenizer and weights come from different checkpoints"
            )
        self.net.eval()

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        encoder_dir: Path | str,
        tags: Sequence[str],
        *,
        name: str,
        version: str,
        head: str = "crf",
        dropout: float = 0.1,
        window: int = 256,
        stride: int = 192,
        scope: str = "note",
    ) -> TransformerTagger:
        """A new (untrained head) tagger on the pretrained encoder in local folder ``encoder_dir``."""
        from transformers import AutoModel, AutoTokenizer

        encoder_dir = Path(encoder_dir)
        if not (encoder_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"encoder folder {encoder_dir} has no config.json; give a local Hugging Face checkpoint"
            )
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
        # fp32 master weights whatever the checkpoint's dtype: a half-precision checkpoint would
        # otherwise be fine-tuned in half precision (GPU training adds bf16 autocast on top).
        encoder = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True, dtype=torch.float32)
        config = TransformerConfig(
            tags=tuple(tags),
            encoder=encoder.config.to_dict(),
            head=head,
            dropout=dropout,
            window=window,
            stride=stride,
            scope=scope,
        )
        info = ArtifactInfo(kind=KIND, name=name, version=version, tags=list(tags))
        return cls(info, TransformerTaggerNet(config, encoder), tokenizer)

    @property
    def config(self) -> TransformerConfig:
        return self.net.config

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> TransformerTagger:
        self.net.to(torch.device(device))
        return self

    @property
    def n_special(self) -> int:
        return (self._prefix is not None) + (self._suffix is not None)

    @property
    def capacity(self) -> int:
        """Note pieces per window (the window less its special tokens)."""
        return self.config.window - self.n_special

    def set_stride(self, stride: int) -> TransformerTagger:
        """Change the step between inference windows (in place); the window size stays as trained.

        A larger stride encodes fewer overlapping pieces (faster) and gives words near window seams
        less context; ``bench/transformer_bench.py --speed ... --strides`` measures both on dev.
        """
        self.net.config = replace(self.config, stride=stride)  # validated by TransformerConfig
        return self

    def quantize_int8(self) -> TransformerTagger:
        """Dynamic int8 quantisation of the encoder's linear layers for CPU inference (in place).

        Roughly 1.6x the CPU throughput; measure its accuracy on dev before serving it.
        """
        if self.device.type != "cpu":
            raise ValueError(f"int8 quantisation is for CPU inference; the tagger is on {self.device}")
        self.net.encoder = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            self.net.encoder, {torch.nn.Linear}, dtype=torch.qint8
        )
        return self

    # ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> EncodedNote:
        """Words, pieces and first pieces of ``text`` (see the module doc, steps 1-2)."""
        words = tokenize(text)
        if not words:
            return EncodedNote([], np.zeros(0, np.int64), np.zeros(0, np.int64), [])
        enc = self.tokenizer(
            text,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        ids: list[int] = enc["input_ids"]
        spans: list[tuple[int, int]] = enc["offset_mapping"]
        out_ids: list[int] = []
        first: list[int] = []
        last_end = -1  # end offset of the last piece emitted
        j = 0
        for word in words:
            while j < len(ids) and spans[j][1] <= word.begin:  # pieces before this word
                out_ids.append(ids[j])
                last_end = spans[j][1]
                j += 1
            if out_ids and last_end > word.begin:
                first.append(len(out_ids) - 1)  # a piece that spans into this word: share it
            else:
                first.append(len(out_ids))
                if not (j < len(ids) and spans[j][0] < word.end):
                    out_ids.append(self._unk)  # the tokenizer dropped this word
                    last_end = word.end
            while j < len(ids) and spans[j][0] < word.end:  # this word's pieces
                out_ids.append(ids[j])
                last_end = spans[j][1]
                j += 1
        out_ids.extend(ids[j:])
        if self.config.scope == "note":
            blocks = [(0, len(words))]
        else:
            blocks = []
            a = 0
            for seg in segment(text):
                blocks.append((a, a + len(seg)))
                a += len(seg)
            assert a == len(words), "segments partition the note's words"
        return EncodedNote(words, np.asarray(out_ids, np.int64), np.asarray(first, np.int64), blocks)

    def inference_windows(self, notes: Sequence[EncodedNote]) -> list[Window]:
        """Every note's windows at inference, each with the words it provides."""
        out = []
        for i, note in enumerate(notes):
            for a, b in note.blocks:
                lo, hi = note.piece_bound(a), note.block_end(b)
                for ps, pe, wa, wb in assign_windows(
                    note.first_piece[a:b], lo, hi, self.capacity, self.config.stride
                ):
                    out.append(Window(i, ps, pe, a + wa, a + wb))
        return out

    def collate(
        self,
        notes: Sequence[EncodedNote],
        windows: Sequence[Window],
        tag_ids: Sequence[IntArray] | None = None,
    ) -> dict[str, Tensor]:
        """Padded network inputs for ``windows`` (and their gold tags, given per-note tag ids)."""
        n_prefix = int(self._prefix is not None)
        pieces = []
        for w in windows:
            row = notes[w.note].piece_ids[w.piece_start : w.piece_end].tolist()
            pieces.append(
                ([self._prefix] if self._prefix is not None else [])
                + row
                + ([self._suffix] if self._suffix is not None else [])
            )
        batch = len(windows)
        max_pieces = max(len(p) for p in pieces)
        max_words = max(w.word_end - w.word_start for w in windows)
        input_ids = torch.full((batch, max_pieces), self._pad, dtype=torch.long)
        attention = torch.zeros((batch, max_pieces), dtype=torch.long)
        word_pieces = torch.zeros((batch, max_words), dtype=torch.long)
        word_mask = torch.zeros((batch, max_words), dtype=torch.bool)
        tags = torch.zeros((batch, max_words), dtype=torch.long)
        for b, (w, row) in enumerate(zip(windows, pieces, strict=True)):
            input_ids[b, : len(row)] = torch.tensor(row)
            attention[b, : len(row)] = 1
            n = w.word_end - w.word_start
            firsts = notes[w.note].first_piece[w.word_start : w.word_end] - w.piece_start + n_prefix
            word_pieces[b, :n] = torch.from_numpy(firsts)
            word_mask[b, :n] = True
            if tag_ids is not None:
                tags[b, :n] = torch.from_numpy(tag_ids[w.note][w.word_start : w.word_end])
        out = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "word_pieces": word_pieces,
            "word_mask": word_mask,
        }
        if tag_ids is not None:
            out["tags"] = tags
        return out

    @staticmethod
    def _batches(windows: Sequence[Window], size: int) -> Iterator[list[Window]]:
        order = sorted(windows, key=lambda w: w.piece_end - w.piece_start, reverse=True)
        for i in range(0, len(order), size):
            yield order[i : i + size]

    @torch.inference_mode()
    def word_emissions(self, notes: Sequence[EncodedNote], batch_size: int | None = None) -> list[Tensor]:
        """Stitched emissions (n_words, num_tags) of each note, on the CPU, in fp32."""
        size = DEFAULT_BATCH_SIZE if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net.eval()
        device = self.device
        out = [torch.zeros((len(n.words), self.config.num_tags)) for n in notes]
        for batch in self._batches(self.inference_windows(notes), size):
            inputs = {k: v.to(device) for k, v in self.collate(notes, batch).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                emissions, _ = self.net(**inputs)
            emissions = emissions.float().cpu()
            for b, w in enumerate(batch):
                out[w.note][w.word_start : w.word_end] = emissions[b, : w.word_end - w.word_start]
        return out

    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        """Entities of each text, in text order, sorted by (begin, end, label)."""
        if isinstance(texts, str):
            raise TypeError("tag() takes a sequence of notes, not a single string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, expected str")
        notes = [self.encode(t) for t in texts]
        emissions = self.word_emissions(notes, batch_size)
        results: list[list[Entity]] = [[] for _ in texts]
        order = sorted((i for i in range(len(texts)) if notes[i].words), key=lambda i: len(notes[i].words))
        device = self.device
        tags = self.config.tags
        for start in range(0, len(order), _DECODE_BATCH):
            group = order[start : start + _DECODE_BATCH]
            longest = max(len(notes[i].words) for i in group)
            padded = torch.zeros((len(group), longest, self.config.num_tags))
            mask = torch.zeros((len(group), longest), dtype=torch.bool)
            for b, i in enumerate(group):
                padded[b, : len(notes[i].words)] = emissions[i]
                mask[b, : len(notes[i].words)] = True
            padded, mask = padded.to(device), mask.to(device)
            paths = self.net.decode(padded, mask)
            spans = [tags_to_token_spans([tags[t] for t in path]) for path in paths]
            scores = self.net.segment_scores(
                padded, mask, paths, [[(f, last) for f, last, _ in s] for s in spans]
            )
            for b, i in enumerate(group):
                results[i] = entities_from_path(texts[i], notes[i].words, spans[b], scores[b])
        return [sort_entities(r) for r in results]

    # ----------------------------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        """Write artifact.json, config.json, model.safetensors, tokenizer/ and metrics.json."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_info(directory, self.info)
        write_json(directory / CONFIG_FILE, asdict(self.config))
        if any("_packed_params" in k for k in self.net.state_dict()):
            raise ValueError("an int8-quantised tagger cannot be saved; save before quantize_int8()")
        # clone(): safetensors refuses tensors that share storage (tied embeddings in some encoders).
        state = {k: v.detach().cpu().clone().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"kind": KIND, "version": self.version})
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        write_json(directory / METRICS_FILE, self.metrics or {})
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> TransformerTagger:
        """Rebuild the tagger from its artifact alone: offline, no pickle, no original checkpoint."""
        from transformers import AutoTokenizer

        directory = Path(directory)
        info = read_info(directory)
        if info.kind != KIND:
            raise ArtifactError(f"artifact {directory} is of kind {info.kind!r}, not {KIND!r}")
        config_path = directory / CONFIG_FILE
        raw = read_json(config_path)
        try:
            config = config_from_json(TransformerConfig, raw, config_path)
        except ValueError as exc:
            if isinstance(exc, ArtifactError):
                raise
            raise ArtifactError(f"{config_path}: {exc}") from exc
        if config.tags != tuple(info.tags):
            raise ArtifactError(
                f"{config_path} has {config.num_tags} tags but {directory / 'artifact.json'} lists "
                f"{len(info.tags)} (or they differ in order): the two files come from different models"
            )
        tokenizer_dir = directory / TOKENIZER_DIR
        if not (tokenizer_dir / "tokenizer.json").is_file():
            raise ArtifactError(f"tokenizer files are missing in {tokenizer_dir}")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ArtifactError(f"weights file {weights} is missing")
        try:
            net = TransformerTaggerNet(config)
        except (TypeError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{config_path}: cannot build the encoder it describes: {exc}") from exc
        state = load_file(str(weights))  # safetensors: tensors only, no code execution
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(
                f"weights in {weights} do not match the network that {config_path} describes: {exc}"
            ) from exc
        metrics_path = directory / METRICS_FILE
        metrics = read_json(metrics_path) if metrics_path.is_file() else None
        tagger = cls(info, net, tokenizer, metrics)
        return tagger.to(device if device is not None else default_device())


def _first_not_none(*values: int | None) -> Any:
    for v in values:
        if v is not None:
            return v
    return None

"""The transformer tagger: any Hugging Face encoder fine-tuned to tag words of raw notes.

How a note becomes entities:

1. **Words** are ``medner_udf.text.tokens.tokenize`` tokens (the same words every medner tagger tags), so
   entity offsets are word offsets and ``text[begin:end] == entity_text`` holds by construction.
2. **Pieces** are the fast tokenizer's for the whole note, with their character offsets (each
   distinct chunk between spaces tokenised once where that gives the same pieces:
   ``medner_udf.taggers.pieces``); each word's *first piece* is the first piece whose character range
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
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from medner_udf.errors import MednerUsageError
from medner_udf.models.transformer import (
    PRECISIONS,
    TransformerConfig,
    TransformerTaggerNet,
    encoder_config_dict,
)
from medner_udf.taggers.artifact import ArtifactError, ArtifactInfo
from medner_udf.taggers.base import Tagger
from medner_udf.taggers.neural import EmissionBatch, NeuralTagger, length_sorted_batches
from medner_udf.taggers.pieces import ChunkPieces
from medner_udf.taggers.windows import EncodedNote, IntArray, Window, align_pieces, assign_windows
from medner_udf.text.tokens import segment_bounds, token_bounds

log = logging.getLogger(__name__)


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices natively (AVX-512 BF16 or AMX tiles)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


KIND = "transformer"


class EncoderNotFoundError(MednerUsageError, FileNotFoundError):
    """The encoder checkpoint folder given for training is missing or not a Hugging Face folder."""


TOKENIZER_DIR = "tokenizer"
_DECODE_BATCH = 16  # notes per Viterbi / forward-backward pass


@Tagger.register(KIND)
class TransformerTagger(NeuralTagger):
    """Tags raw notes with a fine-tuned transformer encoder (see the module doc)."""

    config_class = TransformerConfig
    default_batch_size = 16  # windows per forward pass
    net: TransformerTaggerNet

    def __init__(
        self,
        info: ArtifactInfo,
        net: TransformerTaggerNet,
        tokenizer: Any,
        metrics: dict[str, Any] | None = None,
    ) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer; character offsets "
                "need one (a folder with tokenizer.json)"
            )
        super().__init__(info, net, metrics)
        self.tokenizer = tokenizer
        self.precision = "fp32"
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

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        encoder_dir: Path | str,
        tags: Sequence[str],
        config: TransformerConfig | None = None,
        *,
        name: str,
        version: str,
    ) -> TransformerTagger:
        """A new (untrained head) tagger on the pretrained encoder in local folder ``encoder_dir``:
        ``config``'s hyperparameters bound to ``tags`` and the encoder's own config."""
        from transformers import AutoModel, AutoTokenizer

        encoder_dir = Path(encoder_dir)
        if not (encoder_dir / "config.json").is_file():
            raise EncoderNotFoundError(
                f"encoder folder {encoder_dir} has no config.json",
                hint="give --encoder (inputs.encoder) a local Hugging Face checkpoint folder",
            )
        tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir), local_files_only=True)
        # fp32 master weights whatever the checkpoint's dtype: a half-precision checkpoint would
        # otherwise be fine-tuned in half precision (GPU training adds bf16 autocast on top).
        encoder = AutoModel.from_pretrained(str(encoder_dir), local_files_only=True, dtype=torch.float32)
        bound = replace(
            config or TransformerConfig(), tags=tuple(tags), encoder=encoder_config_dict(encoder.config)
        )
        info = ArtifactInfo(kind=KIND, name=name, version=version, tags=list(tags))
        return cls(info, TransformerTaggerNet(bound, encoder), tokenizer)

    @property
    def config(self) -> TransformerConfig:
        return self.net.config

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

    def set_precision(self, precision: str) -> TransformerTagger:
        """How the encoder computes on a CPU (in place): ``fp32``; ``bf16``, autocast to bfloat16
        matrix products (AVX-512 BF16 and AMX run them natively); or ``int8``, dynamic quantisation
        of the linear layers (VNNI). A GPU always runs bf16 autocast. ``bench/transformer_bench.py
        --speed ... --precisions`` measures speed and dev F1 of each; the artifact's
        ``cpu_precision`` is the one chosen, applied when it loads on a CPU.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if self.precision == "int8" and precision != "int8":
            raise ValueError("an int8-quantised tagger cannot go back to float; load the artifact again")
        if precision == "int8" and self.precision != "int8":
            if self.device.type != "cpu":
                raise ValueError(f"int8 quantisation is for CPU inference; the tagger is on {self.device}")
            with warnings.catch_warnings():
                # torch deprecates its eager quantisation in favour of torchao, which medner does not
                # depend on; int8 is one measured option, not the default (docs/transformers.md).
                warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")
                warnings.filterwarnings("ignore", message=".*quantized tensor creation functions")
                self.net.encoder = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    self.net.encoder, {torch.nn.Linear}, dtype=torch.qint8
                )
        self.precision = precision
        return self

    def quantize_int8(self) -> TransformerTagger:
        """``set_precision("int8")``: dynamic int8 quantisation of the encoder's linear layers."""
        return self.set_precision("int8")

    # ----------------------------------------------------------------------------------------------
    def encode(self, text: str) -> EncodedNote:
        """Words, pieces and first pieces of ``text`` (see the module doc, steps 1-2)."""
        return self.encode_notes([text])[0]

    def encode_notes(self, texts: Sequence[str]) -> list[EncodedNote]:
        """``encode`` for many notes: each note's pieces from the fast tokenizer (each distinct
        whitespace-separated chunk tokenised once where that is exact: ``taggers.pieces``), its
        words aligned with them as arrays.

        Not with the tokenizer's ``encode_batch``, which runs a thread pool of its own as wide as
        the machine: inside a Spark task that would oversubscribe the cores the task was given.
        """
        pieces = self._pieces()
        out = []
        for text, (ids, offsets) in zip(texts, pieces.encode(texts), strict=True):
            begins, ends = token_bounds(text)
            piece_ids, first = align_pieces(begins, ends, ids, offsets, self._unk)
            if self.config.scope == "note":
                blocks = [(0, len(begins))] if len(begins) else []
            else:
                segs = segment_bounds(text)
                blocks = list(zip(segs.starts.tolist(), segs.stops.tolist(), strict=True))
            out.append(EncodedNote(begins, ends, piece_ids, first, blocks))
        return out

    def _pieces(self) -> ChunkPieces:
        cached: ChunkPieces | None = getattr(self, "_chunk_pieces", None)
        backend = self.tokenizer.backend_tokenizer
        if cached is None or cached.backend is not backend:
            cached = self._chunk_pieces = ChunkPieces(backend)
        return cached

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
        batch = len(windows)
        n_pieces = np.array([w.piece_end - w.piece_start for w in windows], dtype=np.int64)
        n_words = np.array([w.word_end - w.word_start for w in windows], dtype=np.int64)
        width = int(n_pieces.max()) + self.n_special
        input_ids = np.full((batch, width), self._pad, dtype=np.int64)
        word_pieces = np.zeros((batch, int(n_words.max())), dtype=np.int64)
        tags = np.zeros_like(word_pieces)
        for b, w in enumerate(windows):
            note = notes[w.note]
            input_ids[b, n_prefix : n_prefix + n_pieces[b]] = note.piece_ids[w.piece_start : w.piece_end]
            word_pieces[b, : n_words[b]] = (
                note.first_piece[w.word_start : w.word_end] - w.piece_start + n_prefix
            )
            if tag_ids is not None:
                tags[b, : n_words[b]] = tag_ids[w.note][w.word_start : w.word_end]
        rows = np.arange(batch)
        if self._prefix is not None:
            input_ids[:, 0] = self._prefix
        if self._suffix is not None:
            input_ids[rows, n_prefix + n_pieces] = self._suffix
        attention = np.arange(width)[None, :] < (n_pieces + self.n_special)[:, None]
        out = {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention.astype(np.int64)),
            "word_pieces": torch.from_numpy(word_pieces),
            "word_mask": torch.from_numpy(np.arange(word_pieces.shape[1])[None, :] < n_words[:, None]),
        }
        if tag_ids is not None:
            out["tags"] = torch.from_numpy(tags)
        return out

    def word_emissions(self, notes: Sequence[EncodedNote], batch_size: int | None = None) -> list[Tensor]:
        """Stitched emissions (n_words, num_tags) of each note, on the CPU, in fp32."""
        flat, offsets = self._flat_emissions(notes, batch_size)
        return [flat[offsets[i] : offsets[i + 1]] for i in range(len(notes))]

    def _flat_emissions(
        self, notes: Sequence[EncodedNote], batch_size: int | None
    ) -> tuple[Tensor, IntArray]:
        """Every note's stitched word emissions in one (words of all notes + 1, num_tags) tensor
        on the CPU in fp32, note i's at rows ``offsets[i]:offsets[i + 1]``; the last row is zeros
        (what padded steps gather)."""
        return self._flat_words(notes, batch_size, self.config.num_tags, lambda inputs: self.net(**inputs)[0])

    def flat_word_vectors(
        self, notes: Sequence[EncodedNote], layers: int = 1, batch_size: int | None = None
    ) -> tuple[Tensor, IntArray]:
        """The encoder's vector of every word of ``notes`` (the mean of its last ``layers`` layers at
        the word's first piece, each word from its window as for emissions) in one (words of all
        notes + 1, hidden) fp32 tensor on the CPU, laid out as ``_flat_emissions``'s."""
        return self._flat_words(
            notes,
            batch_size,
            self.net.hidden_size,
            lambda batch: self.net.word_states(
                batch["input_ids"], batch["attention_mask"], batch["word_pieces"], layers
            ),
        )

    @torch.inference_mode()
    def _flat_words(
        self,
        notes: Sequence[EncodedNote],
        batch_size: int | None,
        width: int,
        per_word: Callable[[dict[str, Tensor]], Tensor],
    ) -> tuple[Tensor, IntArray]:
        """``per_word`` (collated window inputs -> (batch, n_words, width)) for every word of every
        note, stitched over windows into one flat tensor (see ``_flat_emissions``)."""
        size = self.default_batch_size if batch_size is None else batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.net.eval()
        device = self.device
        offsets = np.cumsum([0] + [n.n_words for n in notes]).astype(np.int64)
        flat = torch.zeros((int(offsets[-1]) + 1, width))
        windows = self.inference_windows(notes)
        bf16 = device.type == "cuda" or self.precision == "bf16"
        for batch in length_sorted_batches(windows, size, _window_length, longest_first=True):
            inputs = {k: v.to(device) for k, v in self.collate(notes, batch).items()}
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                outputs = per_word(inputs)
            outputs = outputs.float().cpu()
            for b, w in enumerate(batch):
                start = int(offsets[w.note]) + w.word_start
                flat[start : start + w.word_end - w.word_start] = outputs[b, : w.word_end - w.word_start]
        return flat, offsets

    def emission_batches(self, texts: Sequence[str], batch_size: int) -> Iterator[EmissionBatch]:
        # Windows are batched for the encoder; decoding then runs over whole notes (see the module
        # doc, step 4), in groups of notes of similar length, gathered from the flat emissions.
        notes = self.encode_notes(texts)
        flat, offsets = self._flat_emissions(notes, batch_size)
        blank = len(flat) - 1
        begins = np.concatenate([n.begins for n in notes] + [np.zeros(1, np.int64)])
        ends = np.concatenate([n.ends for n in notes] + [np.zeros(1, np.int64)])
        lengths = np.diff(offsets)
        device = self.device
        with_words = np.flatnonzero(lengths).tolist()
        for group in length_sorted_batches(with_words, _DECODE_BATCH, lambda i: int(lengths[i])):
            steps = np.arange(int(lengths[group].max()))[None, :]
            mask = steps < lengths[group][:, None]
            rows = np.where(mask, offsets[group][:, None] + steps, blank)
            yield EmissionBatch(
                flat[torch.from_numpy(rows)].to(device),
                torch.from_numpy(mask).to(device),
                list(group),
                begins[rows],
                ends[rows],
            )

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def build_network(cls, config: TransformerConfig) -> TransformerTaggerNet:
        return TransformerTaggerNet(config)

    def _save_files(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))

    def save(self, directory: Path | str) -> Path:
        if any("_packed_params" in k for k in self.net.state_dict()):
            raise ValueError("an int8-quantised tagger cannot be saved; save before quantize_int8()")
        return super().save(directory)

    def to(self, device: torch.device | str) -> TransformerTagger:
        if getattr(self, "precision", "fp32") == "int8" and torch.device(device).type != "cpu":
            raise ValueError(
                "an int8-quantised tagger runs on the CPU only; load the artifact again for a GPU"
            )
        super().to(device)
        return self

    @classmethod
    def load(
        cls, directory: Path | str, device: torch.device | str | None = None, *, precision: str | None = None
    ) -> TransformerTagger:
        """The artifact's tagger; on a CPU with ``precision``, by default the artifact's
        ``cpu_precision``."""
        tagger = super().load(directory, device)
        chosen = precision or tagger.config.cpu_precision
        if precision is None and chosen == "bf16" and not native_bf16():
            # Without AVX-512 BF16 or AMX, bf16 matrix products are emulated and run several
            # times slower than fp32 (docs/models.md, "CPU precision"); an explicit request stands.
            log.info("this CPU has no native bf16 (AVX-512 BF16 or AMX): the encoder runs in fp32")
            chosen = "fp32"
        if tagger.device.type == "cpu" and chosen != "fp32":
            tagger.set_precision(chosen)
        return tagger

    @classmethod
    def _from_artifact(
        cls, directory: Path, info: ArtifactInfo, net: TransformerTaggerNet
    ) -> TransformerTagger:
        from transformers import AutoTokenizer

        tokenizer_dir = directory / TOKENIZER_DIR
        if not (tokenizer_dir / "tokenizer.json").is_file():
            raise ArtifactError(f"tokenizer files are missing in {tokenizer_dir}")
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
        return cls(info, net, tokenizer)


def _window_length(window: Window) -> int:
    return window.piece_end - window.piece_start


def _first_not_none(*values: int | None) -> Any:
    for v in values:
        if v is not None:
            return v
    return None

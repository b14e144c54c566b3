"""The BiLSTM-CNN-CRF tagger: vocabularies, encoding, batched inference, and its artifact."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import load_file, save_file

from medner_udf.models.bilstm_cnn_crf import UNK, BiLstmCnnCrf, BiLstmCnnCrfConfig
from medner_udf.taggers.artifact import (
    CONFIG_FILE,
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
from medner_udf.text.scheme import allowed_transitions, tags_to_token_spans
from medner_udf.text.tokens import DEFAULT_MAX_SEGMENT_TOKENS, segment
from medner_udf.text.types import Entity, Token

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


@Tagger.register(KIND)
class BiLstmCnnCrfTagger(Tagger):
    def __init__(
        self,
        info: ArtifactInfo,
        model: BiLstmCnnCrf,
        words: Vocabulary,
        tuned_words: Vocabulary,
        chars: Vocabulary,
        max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
        batch_size: int = 64,
        pack_lines: bool = False,
    ) -> None:
        if info.kind != KIND:
            raise ArtifactError(f"artifact kind {info.kind!r} is not {KIND!r}")
        cfg = model.config
        for what, vocab, expected in (
            ("word", words, cfg.num_words),
            ("tuned word", tuned_words, cfg.num_tuned_words),
            ("char", chars, cfg.num_chars),
        ):
            if len(vocab) != expected:
                raise ArtifactError(
                    f"{what} vocabulary has {len(vocab)} ids but the model config expects {expected}"
                )
        if len(info.tags) != cfg.num_tags:
            raise ArtifactError(
                f"artifact lists {len(info.tags)} tags but the model config expects {cfg.num_tags}"
            )
        self.info = info
        self.model = model.eval()
        self.words, self.tuned_words, self.chars = words, tuned_words, chars
        self.max_segment_tokens = max_segment_tokens
        self.batch_size = batch_size
        # Segmentation is part of the model: it must be the same at inference as in training.
        self.pack_lines = pack_lines

    # ----------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        name: str,
        version: str,
        tags: list[str],
        train_tokens: Sequence[Sequence[Token]],
        glove_words: Sequence[str],
        glove_vectors: npt.NDArray[np.float32],
        config_overrides: dict[str, object] | None = None,
        min_char_count: int = 1,
        glove_limit: int | None = None,
    ) -> BiLstmCnnCrfTagger:
        """A fresh (untrained) tagger with vocabularies from the training tokens and GloVe.

        ``glove_words``/``glove_vectors`` are the whole GloVe table in its frequency order; the
        artifact carries its first ``glove_limit`` rows (all when None) plus the row of every
        training word GloVe knows beyond that cut, so no training word loses its vector.
        """
        word_counts = Counter(word_key(t.text) for toks in train_tokens for t in toks)
        char_counts = Counter(ch for toks in train_tokens for t in toks for ch in t.text)
        glove_index = {w: i for i, w in enumerate(glove_words)}
        cut = len(glove_words) if glove_limit is None else min(glove_limit, len(glove_words))
        extra = sorted(w for w in word_counts if w in glove_index and glove_index[w] >= cut)
        pretrained_words = list(glove_words[:cut]) + extra
        words = Vocabulary(pretrained_words)
        tuned = Vocabulary(sorted(word_counts))
        chars = Vocabulary(sorted(c for c, n in char_counts.items() if n >= min_char_count))
        config = BiLstmCnnCrfConfig(
            num_tags=len(tags),
            num_words=len(words),
            num_tuned_words=len(tuned),
            num_chars=len(chars),
            word_dim=int(glove_vectors.shape[1]),
            **(config_overrides or {}),  # type: ignore[arg-type]
        )
        model = BiLstmCnnCrf(config, allowed_transitions(tags))
        table = np.zeros((len(words), config.word_dim), dtype=np.float32)
        table[2 : 2 + cut] = glove_vectors[:cut]
        for i, w in enumerate(extra):
            table[2 + cut + i] = glove_vectors[glove_index[w]]
        model.set_pretrained(torch.from_numpy(table))
        info = ArtifactInfo(kind=KIND, name=name, version=version, tags=list(tags))
        return cls(info, model, words, tuned, chars)

    # ----------------------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: torch.device | str) -> BiLstmCnnCrfTagger:
        self.model.to(torch.device(device))
        return self

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
        max_chars = self.model.config.max_word_chars
        word_chars = min(max_chars, max(len(t.text) for s in segments for t in s))
        # The CNN needs at least kernel-width positions to see a whole window.
        word_chars = max(word_chars, self.model.config.char_kernel)
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

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def _batches(order: Sequence[int], size: int) -> Iterator[Sequence[int]]:
        for start in range(0, len(order), size):
            yield order[start : start + size]

    @torch.inference_mode()
    def tag(self, texts: Sequence[str], batch_size: int | None = None) -> list[list[Entity]]:
        size = batch_size or self.batch_size
        if size < 1:
            raise ValueError(f"batch_size must be >= 1, got {size}")
        self.model.eval()
        # Every segment of every note, remembered with its note; then sorted by length so each
        # batch pads little. Results are put back in note order at the end.
        segments: list[list[Token]] = []
        owner: list[int] = []
        for n, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{n}] is {type(text).__name__}, expected str")
            for seg in segment(text, self.max_segment_tokens, self.pack_lines):
                segments.append(seg)
                owner.append(n)
        order = sorted(range(len(segments)), key=lambda i: len(segments[i]))
        results: list[list[Entity]] = [[] for _ in texts]
        device = self.device
        for idx in self._batches(order, size):
            batch_segments = [segments[i] for i in idx]
            enc = self.encode(batch_segments).to(device)
            emissions, _ = self.model(enc.words, enc.tuned, enc.chars, enc.mask)
            paths = self.model.crf.decode(emissions, enc.mask)
            spans = [tags_to_token_spans([self.info.tags[t] for t in p]) for p in paths]
            ranges = [[(a, b) for a, b, _ in s] for s in spans]
            if any(ranges):
                scores = self.model.crf.segment_probabilities(emissions, enc.mask, paths, ranges)
            else:
                scores = [[] for _ in ranges]
            for i, seg, seg_spans, seg_scores in zip(idx, batch_segments, spans, scores, strict=True):
                results[owner[i]].extend(entities_from_path(texts[owner[i]], seg, seg_spans, seg_scores))
        return [sort_entities(r) for r in results]

    # ----------------------------------------------------------------------------------------------
    def save(self, directory: Path | str) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_info(directory, self.info)
        write_json(directory / CONFIG_FILE, asdict(self.model.config))
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
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        # The frozen GloVe table is most of the artifact; half precision halves it at no measurable
        # cost (its values are ~N(0, 0.4), well inside fp16's precision).
        state["pretrained.weight"] = state["pretrained.weight"].half()
        save_file(state, str(directory / WEIGHTS_FILE), metadata={"kind": KIND, "version": self.info.version})
        return directory

    @classmethod
    def load(cls, directory: Path | str, device: torch.device | str | None = None) -> BiLstmCnnCrfTagger:
        directory = Path(directory)
        info = read_info(directory)
        config = config_from_json(
            BiLstmCnnCrfConfig, read_json(directory / CONFIG_FILE), directory / CONFIG_FILE
        )
        vocab = read_json(directory / VOCAB_FILE)
        if not isinstance(vocab, dict) or not {"words", "tuned_words", "chars"} <= vocab.keys():
            raise ArtifactError(f"{directory / VOCAB_FILE} must hold words, tuned_words and chars lists")
        model = BiLstmCnnCrf(config, allowed_transitions(info.tags))
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise ArtifactError(f"weights file {weights} is missing")
        state = load_file(str(weights))  # safetensors: tensors only, no code execution
        state["pretrained.weight"] = state["pretrained.weight"].float()
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactError(f"weights in {weights} do not match config.json: {exc}") from exc
        tagger = cls(
            info,
            model,
            Vocabulary(vocab["words"]),
            Vocabulary(vocab["tuned_words"]),
            Vocabulary(vocab["chars"]),
            int(vocab.get("max_segment_tokens", DEFAULT_MAX_SEGMENT_TOKENS)),
            pack_lines=bool(vocab.get("pack_lines", False)),
        )
        return tagger.to(device if device is not None else default_device())

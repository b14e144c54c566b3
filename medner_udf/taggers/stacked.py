"""The stacked tagger: a BiLSTM-CNN-CRF whose words also carry a frozen transformer's vectors.

Each word's features under the BiLSTM are its GloVe vector (plus the trained delta), its character
CNN features and the transformer encoder's contextual vector of the word: the mean of the encoder's
last ``context_layers`` layers at the word's first piece, layer-normalised
(``medner_udf.models.bilstm_cnn_crf``). The encoder is **frozen**: it is never trained with the
BiLSTM, so it may be a pretrained checkpoint (all-MiniLM-L6-v2 by default) or the encoder of a
trained transformer tagger. It sees whole notes in windows exactly as the transformer tagger does
(``TransformerTagger.flat_word_vectors``); the BiLSTM sees the notes' segments as the BiLSTM-CNN-CRF
does, and each of its words takes the vector of the same word (both tag ``medner_udf.text.tokens``
words).

The artifact is a BiLSTM-CNN-CRF artifact (kind ``stacked-bilstm-cnn-crf``, ``context_dim`` set in
its config) with the encoder as a transformer artifact in its ``context/`` folder, so it loads,
moves between devices and serves in the job like any other tagger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import torch

from medner_udf.models.bilstm_cnn_crf import BiLstmCnnCrf, BiLstmCnnCrfConfig
from medner_udf.taggers.artifact import ArtifactError, ArtifactInfo
from medner_udf.taggers.base import Tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger, Vocabulary, _EncodedNotes
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.tokens import DEFAULT_MAX_SEGMENT_TOKENS
from medner_udf.text.types import Token

KIND = "stacked-bilstm-cnn-crf"
CONTEXT_DIR = "context"


@Tagger.register(KIND)
class StackedTagger(BiLstmCnnCrfTagger):
    """A BiLSTM-CNN-CRF over GloVe, characters and a frozen encoder's word vectors (module doc)."""

    def __init__(
        self,
        info: ArtifactInfo,
        net: BiLstmCnnCrf,
        words: Vocabulary,
        tuned_words: Vocabulary,
        chars: Vocabulary,
        max_segment_tokens: int = DEFAULT_MAX_SEGMENT_TOKENS,
        pack_lines: bool = False,
        *,
        context: TransformerTagger,
    ) -> None:
        super().__init__(info, net, words, tuned_words, chars, max_segment_tokens, pack_lines)
        hidden = context.net.hidden_size
        if net.config.context_dim != hidden:
            raise ArtifactError(
                f"the network takes {net.config.context_dim}-wide context vectors but the encoder "
                f"gives {hidden}: the two come from different models"
            )
        self.context = context
        # Training keeps each note's vectors (the encoder is frozen, so they never change); off by
        # default so a long-running job's memory does not grow with the notes it has seen.
        self._kept: dict[str, torch.Tensor] | None = None

    @classmethod
    def create_stacked(
        cls,
        name: str,
        version: str,
        tags: Sequence[str],
        train_tokens: Sequence[Sequence[Token]],
        glove_words: Sequence[str],
        glove_vectors: npt.NDArray[np.float32],
        context: TransformerTagger,
        config: BiLstmCnnCrfConfig | None = None,
        **options: Any,
    ) -> StackedTagger:
        """A fresh stacked tagger (``BiLstmCnnCrfTagger.create``) on the frozen encoder of
        ``context``, its ``context_dim`` bound to the encoder's width."""
        bound = replace(config or BiLstmCnnCrfConfig(), context_dim=context.net.hidden_size)
        for p in context.net.parameters():
            p.requires_grad_(False)
        return cls.create(
            name, version, tags, train_tokens, glove_words, glove_vectors, bound, context=context, **options
        )

    # ----------------------------------------------------------------------------------------------
    def keep_context_vectors(self, keep: bool = True) -> StackedTagger:
        """Keep every note's encoder vectors once computed (training: dev is tagged every epoch);
        ``False`` drops them."""
        self._kept = {} if keep else None
        return self

    def note_context(self, texts: Sequence[str]) -> list[torch.Tensor]:
        """Each note's encoder vectors, (words, context_dim) fp32 on the CPU, words in note order
        (``tokenize``'s)."""
        missing = list(dict.fromkeys(t for t in texts if self._kept is None or t not in self._kept))
        computed: dict[str, torch.Tensor] = {}
        if missing:
            encoded = self.context.encode_notes(missing)
            flat, offsets = self.context.flat_word_vectors(encoded, self.config.context_layers)
            computed = {text: flat[offsets[i] : offsets[i + 1]].clone() for i, text in enumerate(missing)}
            if self._kept is not None:
                self._kept.update(computed)
        return [computed[t] if t in computed else self._kept[t] for t in texts]  # type: ignore[index]

    def _context_vectors(self, texts: Sequence[str], notes: _EncodedNotes) -> torch.Tensor:
        # The segments of a note cover all its words in note order (``segment_bounds`` is built on
        # ``token_bounds``), so the flat tokens of ``notes`` are the notes' words one after another:
        # the per-note vectors stacked are already the table the batches gather from.
        vectors = self.note_context(texts)
        sizes = np.diff(notes.note_start).tolist()
        if sizes != [len(v) for v in vectors]:
            raise RuntimeError("segment tokens are not the note's tokens")  # a bug, never the text
        return torch.cat([*vectors, torch.zeros((1, self.config.context_dim))])

    # ----------------------------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> Self:
        super().to(device)
        self.context.to(device)
        return self

    def _save_files(self, directory: Path) -> None:
        super()._save_files(directory)
        self.context.save(directory / CONTEXT_DIR)

    @classmethod
    def _from_artifact(cls, directory: Path, info: ArtifactInfo, net: BiLstmCnnCrf) -> Self:
        folder = directory / CONTEXT_DIR
        if not (folder / "artifact.json").is_file():
            raise ArtifactError(f"the stacked tagger's encoder is missing: no artifact in {folder}")
        context = TransformerTagger.load(folder, device="cpu")
        for p in context.net.parameters():
            p.requires_grad_(False)
        return cls(info, net, *cls._read_vocab(directory), context=context)

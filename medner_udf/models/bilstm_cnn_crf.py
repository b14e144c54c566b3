"""BiLSTM-CNN-CRF (Ma & Hovy 2016): character CNN + word vectors -> BiLSTM -> CRF.

Word vectors are split into two tables whose rows are summed:

- ``pretrained``: GloVe vectors for a large vocabulary, **frozen**. Words never seen in training
  still get their GloVe vector, in the same space the network was trained in.
- ``tuned``: a trainable correction for each training-vocabulary word, initialised at zero. Ma & Hovy
  fine-tune embeddings; doing it as a separate delta keeps unseen words consistent with seen ones
  (their delta is simply zero), which plain fine-tuning of one shared table would not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from medner_udf.models.base import TaggingNetwork

PAD = 0  # padding id in every id space (words, tuned words, chars)
UNK = 1  # unknown id in every id space


@dataclass(frozen=True)
class BiLstmCnnCrfConfig:
    """The network's hyperparameters, then the sizes bound to the data when a tagger is created.

    The training settings' ``model`` table sets the hyperparameters; ``tags`` and the vocabulary
    sizes (PAD and UNK included) stay empty until ``BiLstmCnnCrfTagger.create`` binds them.
    """

    word_dim: int = 50  # the pretrained vectors' width (bound from GloVe)
    char_dim: int = 30
    char_filters: int = 50
    char_kernel: int = 3
    max_word_chars: int = 24  # longer tokens keep their first chars for the CNN; the token itself is kept
    lstm_hidden: int = 200  # per direction
    lstm_layers: int = 1
    dropout: float = 0.5
    tags: tuple[str, ...] = ()
    num_words: int = 0  # rows of the frozen pretrained table
    num_tuned_words: int = 0  # rows of the trainable delta table
    num_chars: int = 0
    # Stacked only: the width of the encoder's word vectors (0: none, the plain BiLSTM-CNN-CRF) and
    # how many of its last layers are averaged into each word's vector.
    context_dim: int = 0
    context_layers: int = 4
    # The character CNN's max-pool reads only a word's own characters (True), so a word's features
    # do not depend on how wide its batch is padded. Artifacts saved before this setting existed
    # pooled over the padding too and load with False (``LEGACY_DEFAULTS``), unchanged.
    char_pool_masked: bool = True

    # Values for keys absent from an older artifact's saved config.
    LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"char_pool_masked": False}

    def __post_init__(self) -> None:
        object.__setattr__(self, "tags", tuple(self.tags))
        for name in ("word_dim", "char_dim", "char_filters", "lstm_hidden", "lstm_layers", "max_word_chars"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.context_layers < 1:
            raise ValueError(f"context_layers must be positive, got {self.context_layers}")
        for name in ("num_words", "num_tuned_words", "num_chars", "context_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.char_kernel < 1 or self.char_kernel % 2 == 0:
            raise ValueError(f"char_kernel must be a positive odd number, got {self.char_kernel}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def num_tags(self) -> int:
        return len(self.tags)

    @property
    def is_bound(self) -> bool:
        """Whether tags and vocabulary sizes are set (a network can be built)."""
        return len(self.tags) >= 2 and min(self.num_words, self.num_tuned_words, self.num_chars) > 2


class BiLstmCnnCrf(TaggingNetwork):
    """Character CNN + (frozen GloVe + tuned delta) word vectors -> BiLSTM -> linear -> CRF.

    The CRF loss is the mean negative log-likelihood per sequence (``mean``).
    """

    def __init__(self, config: BiLstmCnnCrfConfig) -> None:
        if not config.is_bound:
            raise ValueError("BiLstmCnnCrfConfig is not bound to a tag list and vocabularies yet")
        super().__init__(config.tags, "crf")
        self.config = config
        c = config
        self.pretrained = nn.Embedding(c.num_words, c.word_dim, padding_idx=PAD)
        self.pretrained.weight.requires_grad_(False)
        self.tuned = nn.Embedding(c.num_tuned_words, c.word_dim, padding_idx=PAD)
        nn.init.zeros_(self.tuned.weight)
        self.char_embedding = nn.Embedding(c.num_chars, c.char_dim, padding_idx=PAD)
        self.char_cnn = nn.Conv1d(c.char_dim, c.char_filters, c.char_kernel, padding=c.char_kernel // 2)
        self.dropout = nn.Dropout(c.dropout)
        # No learned scale or shift: the encoder's vectors only need a common scale (some of their
        # dimensions are far larger than the rest); the LSTM's input weights do the rest.
        self.context_norm = nn.LayerNorm(c.context_dim, elementwise_affine=False) if c.context_dim else None
        self.lstm = BiLstm(
            c.word_dim + c.char_filters + c.context_dim, c.lstm_hidden, c.lstm_layers, c.dropout
        )
        self.hidden_to_tags = nn.Linear(2 * c.lstm_hidden, c.num_tags)
        self.build_head()

    def set_pretrained(self, vectors: Tensor) -> None:
        if vectors.shape != self.pretrained.weight.shape:
            raise ValueError(
                f"pretrained vectors {tuple(vectors.shape)} != {tuple(self.pretrained.weight.shape)}"
            )
        with torch.no_grad():
            self.pretrained.weight.copy_(vectors)

    def emissions_from_hidden(self, hidden: Tensor) -> Tensor:
        """BiLSTM outputs (batch, seq_len, 2 * lstm_hidden) -> emission scores (batch, seq_len, num_tags)."""
        emissions: Tensor = self.hidden_to_tags(self.dropout(hidden))
        return emissions

    def hidden_states(
        self, words: Tensor, tuned: Tensor, chars: Tensor, mask: Tensor, context: Tensor | None = None
    ) -> Tensor:
        """The BiLSTM's outputs, shape (batch, seq_len, 2 * lstm_hidden): forward direction first.

        words, tuned, mask: (batch, seq_len); chars: (batch, seq_len, word_chars); context (stacked
        networks only, required there): (batch, seq_len, context_dim) the encoder's word vectors.
        """
        if (context is None) != (self.context_norm is None):
            raise ValueError(
                f"this network takes {self.config.context_dim}-wide context vectors"
                if context is None
                else "context vectors given to a network without context_dim"
            )
        batch, seq_len, word_chars = chars.shape
        word_vectors = self.pretrained(words) + self.tuned(tuned)  # shape: (batch, seq_len, word_dim)
        char_vectors = self.char_embedding(chars.view(batch * seq_len, word_chars))
        # shape: (batch * seq_len, char_dim, word_chars) for Conv1d
        char_vectors = self.dropout(char_vectors).transpose(1, 2)
        # shape: (batch * seq_len, filters, word_chars)
        char_maps = self.char_cnn(char_vectors)
        if self.config.char_pool_masked:
            padding = chars.view(batch * seq_len, 1, word_chars) == PAD
            # -inf at the padding columns, added (a broadcast add costs a fifth of a masked_fill here).
            no_char = torch.zeros(padding.shape, dtype=char_maps.dtype, device=chars.device)
            char_maps = char_maps + no_char.masked_fill_(padding, float("-inf"))
            # A padding step has no characters: its features are zeros, not -inf.
            char_features = char_maps.max(dim=2).values.masked_fill(padding.all(dim=2), 0.0)
        else:
            char_features = char_maps.max(dim=2).values  # shape: (batch * seq_len, filters)
        char_features = char_features.view(batch, seq_len, -1)
        parts = [word_vectors, char_features]
        if context is not None and self.context_norm is not None:
            parts.append(self.context_norm(context.float()))
        features = self.dropout(torch.cat(parts, dim=2))
        hidden: Tensor = self.lstm(features, mask)
        return hidden

    def forward(
        self,
        words: Tensor,
        tuned: Tensor,
        chars: Tensor,
        mask: Tensor,
        tags: Tensor | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(emissions (batch, seq_len, num_tags), loss); the loss only when gold tags are given."""
        emissions = self.emissions_from_hidden(self.hidden_states(words, tuned, chars, mask, context))
        if tags is None:
            return emissions, None
        return emissions, self.head_loss(emissions, tags, mask)


class BiLstm(nn.Module):
    """A (stacked) bidirectional LSTM over left-aligned, padded batches, without packing.

    Each direction is a unidirectional ``nn.LSTM`` run on the padded tensor; the backward one sees
    every sequence reversed within its own length (a gather), so it starts at the sequence's last
    real token and padding never reaches a real step's state. On a CPU this is 3x faster to train
    than ``nn.LSTM(bidirectional=True)`` on a ``PackedSequence``, whose backward pass with unequal
    lengths leaves the oneDNN kernel for a per-step fallback. Outputs at padding steps are
    arbitrary; callers mask them.
    """

    def __init__(self, input_size: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.forward_layers = nn.ModuleList()
        self.backward_layers = nn.ModuleList()
        for layer in range(layers):
            size = input_size if layer == 0 else 2 * hidden
            self.forward_layers.append(nn.LSTM(size, hidden, batch_first=True))
            self.backward_layers.append(nn.LSTM(size, hidden, batch_first=True))
        self.dropout = nn.Dropout(dropout)
        # Artifacts written before this class stored one nn.LSTM(bidirectional=True) named "lstm".
        self.register_load_state_dict_pre_hook(_rename_bidirectional_lstm_keys)  # type: ignore[no-untyped-call]

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        """inputs (batch, seq_len, features), mask (batch, seq_len) -> (batch, seq_len, 2 * hidden)."""
        seq_len = inputs.size(1)
        steps = torch.arange(seq_len, device=inputs.device).unsqueeze(0)  # shape: (1, seq_len)
        lengths = mask.sum(dim=1, keepdim=True)  # shape: (batch, 1)
        # Position t of a reversed sequence reads step length-1-t; padding steps stay where they are.
        # The permutation is its own inverse, so the same gather puts outputs back in order.
        reverse = torch.where(steps < lengths, lengths - 1 - steps, steps)  # shape: (batch, seq_len)
        x = inputs
        for layer, (fwd, bwd) in enumerate(zip(self.forward_layers, self.backward_layers, strict=True)):
            if layer > 0:
                x = self.dropout(x)
            index = reverse.unsqueeze(2).expand(-1, -1, x.size(2))
            out_fwd, _ = fwd(x)
            out_bwd, _ = bwd(x.gather(1, index))
            index = reverse.unsqueeze(2).expand(-1, -1, out_bwd.size(2))
            x = torch.cat([out_fwd, out_bwd.gather(1, index)], dim=2)
        return x


def _rename_bidirectional_lstm_keys(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    """Map nn.LSTM(bidirectional=True) parameter names (``weight_ih_l1_reverse``) onto BiLstm's."""
    for key in [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]:
        name = key[len(prefix) :]  # e.g. weight_hh_l0 or bias_ih_l1_reverse
        direction = "backward_layers" if name.endswith("_reverse") else "forward_layers"
        base, _sep, layer = name.removesuffix("_reverse").rpartition("_l")
        if not layer.isdigit():
            continue
        state_dict[f"{prefix}{direction}.{layer}.{base}_l0"] = state_dict.pop(key)

"""A pretrained transformer encoder with a word-level tagging head (softmax or the shared CRF).

The network sees sub-word pieces but predicts one tag per *word*: it gathers the encoder's state at
each word's first piece (the first-piece labelling of Hugging Face's ``run_ner.py``, done as a
gather instead of ``-100`` labels so that a CRF can run over words, where the tag scheme lives).

Any encoder that ``transformers.AutoModel`` can build works (BERT, DistilBERT, RoBERTa,
DeBERTa-v2/v3, MPNet, MiniLM, ...). The encoder's own config is kept inside ``TransformerConfig``
so an artifact rebuilds the architecture without the checkpoint it was fine-tuned from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from medner_udf.models.base import HEADS, TaggingNetwork

SCOPES = ("note", "segment")
PRECISIONS = ("fp32", "bf16", "int8")
# RoBERTa-style position ids start after the padding index, which costs pad_token_id + 1 slots.
_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "mpnet")


@dataclass(frozen=True)
class TransformerConfig:
    """Everything needed to rebuild the network (and window notes the way it was trained).

    The hyperparameters come first (the training settings' ``model`` table sets them); ``tags`` and
    ``encoder`` are bound when a tagger is created: the tag list, and the Hugging Face config dict of
    the encoder (``PretrainedConfig.to_dict()``), so an artifact rebuilds the architecture without the
    checkpoint it was fine-tuned from.

    ``window`` counts pieces including the special tokens; ``stride`` is the step between window
    starts at inference (``window - specials - stride`` pieces of overlap). ``scope`` ``note`` windows
    whole notes (cross-sentence context); ``segment`` windows each line on its own (the plain recipe).
    """

    head: str = "crf"
    dropout: float = 0.1
    window: int = 256
    stride: int = 192
    scope: str = "note"
    # How the encoder runs on a CPU unless the caller says otherwise (TransformerTagger.set_precision):
    # fp32, bf16 (autocast: bf16 matrix products, e.g. AVX-512 BF16) or int8 (dynamic quantisation).
    cpu_precision: str = "fp32"
    tags: tuple[str, ...] = ()
    encoder: dict[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        # JSON gives lists; keep the dataclass immutable.
        object.__setattr__(self, "tags", tuple(self.tags))
        if self.tags and len(self.tags) < 2:
            raise ValueError(f"need at least 2 tags (O and one entity tag), got {len(self.tags)}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {self.scope!r}")
        if self.cpu_precision not in PRECISIONS:
            raise ValueError(f"cpu_precision must be one of {PRECISIONS}, got {self.cpu_precision!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.encoder and "model_type" not in self.encoder:
            raise ValueError("encoder config must carry its 'model_type' (a PretrainedConfig.to_dict())")
        if self.window < 8:
            raise ValueError(f"window must be >= 8 pieces, got {self.window}")
        if not 1 <= self.stride <= self.window - 2:
            raise ValueError(f"stride must be in [1, window - 2 = {self.window - 2}], got {self.stride}")
        max_positions = self.encoder.get("max_position_embeddings")
        offset = (self.encoder.get("pad_token_id") or 0) + 1 if self.model_type in _OFFSET_POSITIONS else 0
        if isinstance(max_positions, int) and max_positions > 0 and self.window > max_positions - offset:
            raise ValueError(
                f"window {self.window} exceeds the encoder's {max_positions - offset} usable positions"
            )

    @property
    def num_tags(self) -> int:
        return len(self.tags)

    @property
    def model_type(self) -> str:
        return str(self.encoder.get("model_type", ""))


def encoder_config_dict(encoder_config: Any) -> dict[str, Any]:
    """The encoder's ``to_dict()`` as an artifact stores it: without ``_name_or_path``, the folder it
    was loaded from on the training machine, which means nothing elsewhere."""
    values: dict[str, Any] = encoder_config.to_dict()
    values.pop("_name_or_path", None)
    return values


def encoder_config_from_dict(raw: dict[str, Any]) -> Any:
    """A ``PretrainedConfig`` rebuilt from ``to_dict()`` output, without touching disk or network."""
    from transformers import AutoConfig

    values = dict(raw)
    model_type = values.pop("model_type")
    # Bookkeeping keys that to_dict() adds but constructors do not expect to be fed back.
    for key in ("transformers_version", "architectures", "_name_or_path"):
        values.pop(key, None)
    return AutoConfig.for_model(model_type, **values)


class TransformerTaggerNet(TaggingNetwork):
    """Encoder -> dropout -> linear emissions per word -> (CRF | softmax).

    The CRF loss is averaged per word (``token_mean``): windows hold very different word counts.
    """

    loss_reduction = "token_mean"

    def __init__(self, config: TransformerConfig, encoder: nn.Module | None = None) -> None:
        if not config.tags or not config.encoder:
            raise ValueError("TransformerConfig is not bound to a tag list and an encoder config yet")
        super().__init__(config.tags, config.head)
        from transformers import AutoModel

        self.config = config
        if encoder is None:
            encoder = AutoModel.from_config(  # type: ignore[no-untyped-call]
                encoder_config_from_dict(config.encoder)
            )
        self.encoder = encoder
        encoder_config: Any = encoder.config
        hidden = int(encoder_config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(hidden, config.num_tags)
        self.build_head()

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        word_pieces: Tensor,
        word_mask: Tensor,
        tags: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Word emissions and, given gold tags, the mean per-word loss.

        input_ids, attention_mask: (batch, n_pieces); word_pieces: (batch, n_words) position of each
        word's first piece; word_mask: (batch, n_words) bool, left-aligned; tags: (batch, n_words).
        """
        words = self.word_states(input_ids, attention_mask, word_pieces)
        # Emissions in fp32 even under autocast: the CRF's logsumexp chains need the range.
        emissions = self.head(self.dropout(words)).float()  # shape: (batch, n_words, num_tags)
        if tags is None:
            return emissions, None
        return emissions, self.head_loss(emissions, tags, word_mask)

    def word_states(
        self, input_ids: Tensor, attention_mask: Tensor, word_pieces: Tensor, layers: int = 1
    ) -> Tensor:
        """The encoder's state at each word's first piece, (batch, n_words, hidden): the last layer's,
        or the mean of the last ``layers`` layers' (what a stacked tagger takes as word features)."""
        if layers == 1:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            states = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            ).hidden_states
            if not 1 <= layers < len(states):
                raise ValueError(f"layers must be in [1, {len(states) - 1}], got {layers}")
            hidden = torch.stack(states[-layers:]).mean(dim=0)
        # shape: (batch, n_pieces, hidden) -> (batch, n_words, hidden)
        index = word_pieces.unsqueeze(2).expand(-1, -1, hidden.size(2))
        words: Tensor = hidden.gather(1, index)
        return words

    @property
    def hidden_size(self) -> int:
        """The width of the encoder's states (and of ``word_states``)."""
        encoder_config: Any = self.encoder.config
        return int(encoder_config.hidden_size)

"""Training throughput of the BiLSTM-CNN-CRF on CPU: the shipped step against the earlier one.

Times full training steps (encode, forward, loss, backward, Adam step) over the same MACCROBAT
train batches for two implementations of the same model, side by side in one run:

- ``autograd CRF + packed LSTM`` (before): log Z differentiated by autograd through the forward
  recursion, and ``nn.LSTM(bidirectional=True)`` over a ``PackedSequence``;
- ``closed-form CRF + unpacked BiLSTM`` (shipped): log Z's gradient from forward-backward marginals
  (``medner_udf.models.crf._LogPartition``) and ``BiLstm``, which runs each direction on the padded
  batch with a per-sequence reversal.

Both variants start from the same weights and see the same batches; the loss of each step is
checked to agree, so the benchmark compares speed of one computation, not two models.

    .venv/bin/python bench/bilstm_train_speed.py --threads 1 --batch-sizes 4 8 16
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medner_udf.corpus.dataset import Sentence, to_sentences
from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.models.bilstm_cnn_crf import BiLstmCnnCrf, BiLstmCnnCrfConfig
from medner_udf.models.crf import _alphas
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
from medner_udf.text.scheme import tag_set
from medner_udf.training.loop import bucketed_batches
from medner_udf.training.pretrained import load_glove


class PackedBiLstm(nn.Module):
    """The earlier layer: one bidirectional nn.LSTM over a PackedSequence (same parameters)."""

    def __init__(self, lstm: nn.LSTM) -> None:
        super().__init__()
        self.lstm = lstm

    def forward(self, inputs: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        hidden, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(hidden, batch_first=True, total_length=inputs.size(1))
        return out


def autograd_log_partition() -> Callable[..., Tensor]:
    """The earlier log Z: the forward recursion, differentiated step by step by autograd."""

    def log_z(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor) -> Tensor:
        return torch.logsumexp(_alphas(emissions, mask, start, trans)[:, -1] + end, dim=1)

    return log_z


def make_before(model: BiLstmCnnCrf) -> BiLstmCnnCrf:
    """A copy of ``model`` computing the same function the earlier way."""
    before = copy.deepcopy(model)
    cfg = before.config
    lstm = nn.LSTM(
        cfg.word_dim + cfg.char_filters, cfg.lstm_hidden, num_layers=cfg.lstm_layers,
        batch_first=True, bidirectional=True,
    )  # fmt: skip
    # BiLstm's load hook maps nn.LSTM names onto it; here we go the other way, by position.
    names = [n for n, _ in lstm.named_parameters()]
    new = dict(before.lstm.named_parameters())
    with torch.no_grad():
        for name in names:
            base, layer = name.removesuffix("_reverse").rsplit("_l", 1)
            direction = "backward_layers" if name.endswith("_reverse") else "forward_layers"
            getattr(lstm, name).copy_(new[f"{direction}.{layer}.{base}_l0"])
    setattr(before, "lstm", PackedBiLstm(lstm))  # noqa: B010 (BiLstm's slot, a different class)
    return before


def time_steps(
    tagger: BiLstmCnnCrfTagger,
    model: BiLstmCnnCrf,
    batches: list[list[Sentence]],
    closed_form: bool,
) -> tuple[float, int, list[float]]:
    """(seconds, tokens, per-step losses) for one pass of training steps over ``batches``."""
    import medner_udf.models.crf as crf_module

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    model.train()
    torch.manual_seed(0)  # same dropout masks for both variants
    original = crf_module._LogPartition.apply
    if not closed_form:
        crf_module._LogPartition.apply = autograd_log_partition()  # type: ignore[method-assign]
    losses: list[float] = []
    tokens = 0
    try:
        started = time.perf_counter()
        for batch in batches:
            enc = tagger.encode([s.tokens for s in batch])
            gold = tagger.encode_tags([s.tags for s in batch])
            optimizer.zero_grad(set_to_none=True)
            _, loss = model(enc.words, enc.tuned, enc.chars, enc.mask, gold)
            assert loss is not None
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            tokens += int(enc.mask.sum())
        seconds = time.perf_counter() - started
    finally:
        crf_module._LogPartition.apply = original  # type: ignore[method-assign]
    return seconds, tokens, losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--steps", type=int, default=40, help="training steps timed per variant and size")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    docs = read_corpus(corpus_path(args.corpus), "train")
    sentences, _ = to_sentences(docs, 128, pack=True)
    sentences = [s for s in sentences if s.tokens]
    tags = tag_set(sorted({m.label for d in docs for m in d.mentions}))
    words, vectors = load_glove()
    torch.manual_seed(0)
    tagger = BiLstmCnnCrfTagger.create(
        "bench", "speed", tags, [s.tokens for s in sentences], words, vectors,
        BiLstmCnnCrfConfig(dropout=0.0), glove_limit=20_000,
    )  # fmt: skip
    shipped = tagger.net
    print(f"{len(sentences)} packed train segments; torch threads {args.threads}; {args.steps} steps each")
    print(
        "| batch size | autograd CRF + packed LSTM tokens/s | closed-form CRF + unpacked BiLSTM tokens/s | speed-up |"
    )
    print("|---|---|---|---|")
    for size in args.batch_sizes:
        batches = bucketed_batches(sentences, size, random.Random(size), lambda s: len(s.tokens))[
            : args.steps
        ]
        figures = []
        losses = []
        for closed_form in (False, True):
            model = make_before(shipped) if not closed_form else copy.deepcopy(shipped)
            seconds, tokens, step_losses = time_steps(tagger, model, batches, closed_form)
            figures.append(tokens / seconds)
            losses.append(step_losses)
        # Same weights, batches and (no) dropout: the two computations must agree step by step.
        if not np.allclose(losses[0], losses[1], rtol=1e-3, atol=1e-2):
            print(f"losses differ at batch size {size}: {losses[0][:3]} vs {losses[1][:3]}", file=sys.stderr)
            return 1
        print(f"| {size} | {figures[0]:,.0f} | {figures[1]:,.0f} | {figures[1] / figures[0]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The host-side ceiling of each tagger: its whole ``tag()`` path with the network's forward pass
replaced by a zero-cost stand-in of the right output shape, on one CPU thread.

Whatever an accelerator does to the forward pass, a tagger cannot tag faster than this: it is the
cost of everything around the network (segmenting or sub-word tokenising, encoding ids, assembling
windows, padding, Viterbi decoding, entity probabilities, building entities). The stand-in returns
slices of one precomputed emission tensor that spells a fixed pattern of valid BIOES mentions (about
a quarter of the words inside a mention, as in MACCROBAT), so decoding and entity building do the
work they do on real output.

    .venv/bin/python bench/host_ceiling.py --model models/<bilstm artifact> [--encoder PATH] \
        [--notes 200] [--notes-per-call N] [--repeats 3] [--batch-size 256]

``--notes-per-call`` hands the notes to ``tag()`` in calls of that many (the extraction job's
micro-batches are 32 notes, ``conf/extract.toml``); by default all of them in one call.

Three figures side by side, on the same notes and one thread: the real forward pass; the zero-cost
forward with the CRF's Viterbi and entity probabilities computed on this CPU (what a CPU executor
pays besides the network); and the zero-cost forward with zero-cost CRF math too (the host
ceiling: on a GPU executor the CRF recursions run on the device, ``CRF.viterbi``'s torch path). Only
counts and timings are printed, never note text.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from threadpoolctl import threadpool_limits
from torch import Tensor

from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.models.transformer import TransformerConfig
from medner_udf.taggers.base import load_tagger
from medner_udf.taggers.bilstm import BiLstmCnnCrfTagger
from medner_udf.taggers.neural import NeuralTagger
from medner_udf.taggers.transformer import TransformerTagger
from medner_udf.text.tokens import tokenize
from medner_udf.training.pretrained import default_encoder_dir


def pattern_path(tags: Sequence[str]) -> npt.NDArray[np.int64]:
    """Tag ids of ``B-X I-X E-X O O O O S-Y O O O O``: 4 of every 12 words in mentions, two
    mentions per 12 words (MACCROBAT has about a quarter of its words in mentions)."""
    index = {t: i for i, t in enumerate(tags)}
    types = sorted({t[2:] for t in tags if t != "O"})
    x, y = types[0], types[-1]
    cycle = [f"B-{x}", f"I-{x}", f"E-{x}", "O", "O", "O", "O", f"S-{y}", "O", "O", "O", "O"]
    return np.array([index[t] for t in cycle], dtype=np.int64)


def pattern_emissions(tags: Sequence[str], length: int) -> Tensor:
    """(length, num_tags) emissions whose best path is ``pattern_path`` repeated."""
    path = pattern_path(tags)
    out = torch.full((length, len(tags)), -5.0)
    out[torch.arange(length), torch.from_numpy(path[np.arange(length) % len(path)])] = 5.0
    return out


def zero_cost_forward(tagger: NeuralTagger) -> Callable[..., tuple[Tensor, None]]:
    """A stand-in for ``tagger.net.forward``: a slice of a cached pattern, no computation."""
    cache = pattern_emissions(tagger.net.tags, 4096)

    def forward(*args: Any, **kwargs: Any) -> tuple[Tensor, None]:
        # The word mask is the last positional mask-like input of both networks.
        mask = kwargs["word_mask"] if "word_mask" in kwargs else args[3]
        batch, seq_len = mask.shape
        if seq_len > cache.size(0):
            raise ValueError(f"stand-in holds 4096 steps, got {seq_len}")
        return cache[:seq_len].unsqueeze(0).expand(batch, -1, -1), None

    return forward


def zero_cost_crf(tagger: NeuralTagger) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """Stand-ins for the CRF's device math (Viterbi and the entity probabilities): the pattern's
    path and probability 1."""

    pattern = pattern_path(tagger.net.tags)
    outside = tagger.net.tags.index("O")

    def viterbi(emissions: Tensor, mask: Tensor, prune: bool | None = None) -> tuple[Any, Any]:
        # The pattern along each row, a valid BIOES path as a constrained CRF's always is (the
        # stitched windows of a transformer restart the stand-in's emissions mid-row, so their
        # argmax need not be): a mention the row's end cuts (B or B I last) is read as O.
        lengths = mask.sum(dim=1).numpy()
        steps = np.arange(mask.size(1))[None, :]
        last = lengths[:, None] - 1
        cut = (last % len(pattern) < 2) & (steps >= last - last % len(pattern))
        paths = np.broadcast_to(pattern[steps % len(pattern)], tuple(mask.shape))
        return np.where((steps < lengths[:, None]) & ~cut, paths, outside), lengths

    def probabilities(emissions: Tensor, mask: Tensor, paths: Any, rows: Any, first: Any, last: Any) -> Any:
        return np.ones(len(rows))

    return viterbi, probabilities


def words_per_second(tag: Callable[[], Any], n_words: int, repeats: int) -> tuple[float, float]:
    """(words per second of process CPU time, per second of wall time), best of ``repeats``."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeats):
        cpu, wall = time.process_time(), time.perf_counter()
        tag()
        best_cpu = min(best_cpu, time.process_time() - cpu)
        best_wall = min(best_wall, time.perf_counter() - wall)
    return n_words / best_cpu, n_words / best_wall


def _fmt(rates: tuple[float, float]) -> str:
    return f"{rates[0]:,.0f} ({rates[1]:,.0f} wall)"


def measure(
    name: str, tagger: NeuralTagger, texts: list[str], batch_size: int, repeats: int, per_call: int
) -> None:
    n_words = sum(len(tokenize(t)) for t in texts)
    calls = [texts[i : i + per_call] for i in range(0, len(texts), per_call)]

    def tag_all() -> None:
        for call in calls:
            tagger.tag(call, batch_size=batch_size)

    real = words_per_second(tag_all, n_words, repeats)
    crf = tagger.net.crf
    assert crf is not None, "the ceiling is measured for CRF heads"
    original = tagger.net.forward, crf.viterbi, crf.path_probabilities
    tagger.net.forward = zero_cost_forward(tagger)
    try:
        with_crf = words_per_second(tag_all, n_words, repeats)
        crf.viterbi, crf.path_probabilities = zero_cost_crf(tagger)  # type: ignore[method-assign]
        host = words_per_second(tag_all, n_words, repeats)
    finally:
        tagger.net.forward, crf.viterbi, crf.path_probabilities = original  # type: ignore[method-assign]
    print(
        f"| {name} | {n_words:,} | {batch_size} | {_fmt(real)} | {_fmt(with_crf)} | {_fmt(host)} | "
        f"{100 * real[0] / host[0]:.0f}% |",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="a BiLSTM-CNN-CRF artifact")
    parser.add_argument("--transformer", type=Path, default=None, help="a transformer artifact (optional)")
    parser.add_argument(
        "--encoder", type=Path, default=None, help="without --transformer: untrained head here"
    )
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--notes", type=int, default=200)
    parser.add_argument(
        "--notes-per-call", type=int, default=None, help="notes per tag() call (default: all)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256, help="segments/windows per forward pass")
    args = parser.parse_args(argv)

    # One thread everywhere (torch, BLAS), so the process's CPU time is the work done: the figures
    # are per second of that CPU time, which a shared machine's other processes do not inflate
    # (wall-clock rates are printed beside them).
    torch.set_num_threads(1)
    threadpool_limits(1)
    docs = read_corpus(corpus_path(args.corpus), "all")
    texts = [docs[i % len(docs)].text for i in range(args.notes)]
    bilstm = load_tagger(args.model, device="cpu")
    if not isinstance(bilstm, BiLstmCnnCrfTagger):
        parser.error(f"--model must be a BiLSTM-CNN-CRF artifact, got kind {bilstm.kind!r}")
    if args.transformer is not None:
        transformer = load_tagger(args.transformer, device="cpu")
        if not isinstance(transformer, TransformerTagger):
            parser.error(f"--transformer must be a transformer artifact, got kind {transformer.kind!r}")
    else:
        # The host path does not depend on the weights: an untrained head on the encoder will do.
        transformer = TransformerTagger.create(
            args.encoder or default_encoder_dir(),
            bilstm.tags,
            TransformerConfig(window=256, stride=240),
            name="ceiling",
            version="0",
        ).to("cpu")
    per_call = args.notes_per_call or args.notes
    print(
        f"{args.notes} notes in calls of {per_call}, one thread; words per second of CPU time "
        "(of wall time) of the whole tag() path"
    )
    print(
        "| tagger | words | batch | real forward | zero-cost forward, CRF on this CPU "
        "| zero-cost forward and CRF (host ceiling) | real / ceiling |"
    )
    print("|---|---|---|---|---|---|---|")
    measure("BiLSTM-CNN-CRF", bilstm, texts, args.batch_size, args.repeats, per_call)
    measure(
        f"transformer ({transformer.config.model_type})",
        transformer,
        texts,
        args.batch_size,
        args.repeats,
        per_call,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CRF inference on the CPU in NumPy: Viterbi and forward-backward over a batch, step by step.

The CRF module (``medner_udf.models.crf``) runs these when its tensors live on the CPU and no
gradient is needed: per time step they are a dozen array operations on (batch, tags) arrays, which
NumPy dispatches in microseconds where torch spends tens to hundreds (its indexing and small
reductions are built for large tensors). Both exploit the transition constraints the same way:

- targets are grouped in buckets by their allowed sources (``CRF._viterbi_buckets``). With BIOES,
  O, B-X and S-X share one source set (the "closed" tags O, E-*, S-*), and I-X and E-X have two
  sources each (B-X, I-X);
- a shared-source bucket is a max-plus (Viterbi) or log-sum-exp (forward, backward) product over
  its sources only, never the full tags x tags square;
- Viterbi skips the sources of a shared bucket that trail the best one by more than the spread of
  the bucket's transition scores: such a source can win no target, so the result is exact.

Everything is float32, as on the device; sums that decide probabilities are taken in float64 by
the caller (``CRF.path_probabilities``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Potentials:
    """A CRF's scores with its constraints applied, as arrays (``_start``, ``_trans``, ``_end``),
    and which moves the constraints allow."""

    start: F32
    trans: F32  # (from, to)
    end: F32
    allowed: npt.NDArray[np.bool_]  # (from, to)


@dataclass(frozen=True)
class Bucket:
    """Targets ``to`` and their sources: ``shared`` (m,) when all targets have the same ones, else
    ``per_target`` (len(to), k), padded where a target has fewer (``valid`` marks the real ones)."""

    to: I64
    shared: I64 | None = None
    per_target: I64 | None = None
    valid: npt.NDArray[np.bool_] | None = None


def buckets(allowed: npt.NDArray[np.bool_]) -> list[Bucket]:
    """Targets grouped by their allowed sources (``allowed[source, target]``): targets sharing one
    source set form a shared bucket; the rest one padded per-target bucket. A target no move
    reaches keeps one source whose move is forbidden (its score stays hopeless)."""
    n = allowed.shape[1]
    sources = [np.flatnonzero(allowed[:, j]) for j in range(n)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for j, src in enumerate(sources):
        groups.setdefault(tuple(src.tolist()) or (0,), []).append(j)
    out: list[Bucket] = []
    loose: list[int] = []
    for src_key, targets in groups.items():
        if len(targets) > 1 and len(src_key) > 2:
            out.append(Bucket(np.array(targets), shared=np.array(src_key)))
        else:
            loose.extend(targets)
    if loose:
        k = max(max(len(sources[j]), 1) for j in loose)
        per = np.zeros((len(loose), k), dtype=np.int64)
        valid = np.zeros((len(loose), k), dtype=bool)
        for row, j in enumerate(loose):
            src = sources[j] if len(sources[j]) else np.array([0])
            per[row, : len(src)] = src
            per[row, len(src) :] = src[0]
            valid[row, : len(src)] = True
        out.append(Bucket(np.array(loose), per_target=per, valid=valid))
    return out


def viterbi(emissions: F32, lengths: I64, p: Potentials) -> I64:
    """Best paths, (batch, seq_len) with 0 on padding; ``emissions`` (batch, seq_len, tags).

    Rows run longest first, so at every step the rows still running are a prefix of the batch and
    each step works on that slice only.
    """
    batch, seq_len, num_tags = emissions.shape
    order = np.argsort(-lengths, kind="stable")
    lengths = lengths[order]
    # Time-major (seq_len, batch, tags): each step reads one contiguous block.
    steps = np.ascontiguousarray(emissions[order].transpose(1, 0, 2))
    running = np.searchsorted(-lengths, -np.arange(seq_len), side="left")  # rows with length > t
    score = p.start + steps[0]  # shape: (batch, tags)
    history = np.zeros((max(seq_len - 1, 0), batch, num_tags), dtype=np.int16)
    plans = [_viterbi_plan(b, p.trans) for b in buckets(p.allowed)]
    rows = np.arange(batch)
    for t in range(1, seq_len):
        n = int(running[t])
        if n == 0:
            break
        now = score[:n]
        best = np.empty_like(now)
        for bucket, by_source, spread in plans:
            if bucket.shared is not None:
                b_best, b_src = _shared_max(now[:, bucket.shared], bucket.shared, by_source, spread, rows[:n])
            else:
                assert bucket.per_target is not None
                b_best, b_src = _few_sources_max(now, bucket.per_target, by_source)
            best[:, bucket.to] = b_best
            history[t - 1, :n, bucket.to] = b_src.T
        score[:n] = best + steps[t, :n]
    last = (score + p.end).argmax(axis=1)
    paths = backtrack(history, last, lengths)
    out = np.empty_like(paths)
    out[order] = paths
    return out


def _viterbi_plan(bucket: Bucket, trans: F32) -> tuple[Bucket, F32, float]:
    if bucket.shared is not None:
        by_source = trans[np.ix_(bucket.shared, bucket.to)]  # shape: (m, bucket_to)
        return bucket, by_source, float(by_source.max() - by_source.min())
    assert bucket.per_target is not None
    # shape: (bucket_to, k): the move from each target's i-th source into it
    return bucket, trans[bucket.per_target, bucket.to[:, None]], np.inf


def _shared_max(
    scores: F32, shared: I64, by_source: F32, spread: float, rows: I64
) -> tuple[F32, npt.NDArray[np.int16]]:
    """max over sources of scores[:, i] + by_source[i, j] for every target j (see the module doc)."""
    top = scores.max(axis=1, keepdims=True)
    k = int((scores >= top - spread).sum(axis=1).max())
    if k == 1:
        index = scores.argmax(axis=1)
        best = scores[rows, index][:, None] + by_source[index]
        return best, np.broadcast_to(shared[index][:, None], best.shape).astype(np.int16)
    if k <= 8:
        kept = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # shape: (batch, k): a superset of the winners
        best = scores[rows, kept[:, 0]][:, None] + by_source[kept[:, 0]]
        src = np.broadcast_to(shared[kept[:, 0]][:, None], best.shape).astype(np.int16)
        for i in range(1, k):
            candidate = scores[rows, kept[:, i]][:, None] + by_source[kept[:, i]]
            better = candidate > best
            best = np.where(better, candidate, best)
            src = np.where(better, shared[kept[:, i]][:, None].astype(np.int16), src)
        return best, src
    candidates = scores[:, :, None] + by_source[None]  # shape: (batch, m, bucket_to)
    arg = candidates.argmax(axis=1)
    return np.take_along_axis(candidates, arg[:, None], axis=1)[:, 0], shared[arg].astype(np.int16)


def _few_sources_max(score: F32, per_target: I64, by_source: F32) -> tuple[F32, npt.NDArray[np.int16]]:
    """Elementwise maxima over each target's few sources (per_target: (bucket_to, k))."""
    best = score[:, per_target[:, 0]] + by_source[:, 0]
    src = np.broadcast_to(per_target[:, 0].astype(np.int16), best.shape)
    for i in range(1, per_target.shape[1]):
        candidate = score[:, per_target[:, i]] + by_source[:, i]
        better = candidate > best
        best = np.where(better, candidate, best)
        src = np.where(better, per_target[:, i].astype(np.int16), src)
    return best, src


def backtrack(history: npt.NDArray[np.integer[Any]], last: I64, lengths: I64) -> I64:
    """Follow the backpointers of every item at once: (seq_len - 1, batch, tags) -> (batch, seq_len)."""
    batch = last.shape[0]
    seq_len = history.shape[0] + 1
    rows = np.arange(batch)
    paths = np.zeros((batch, seq_len), dtype=np.int64)
    current = last.astype(np.int64)
    for t in range(seq_len - 1, -1, -1):
        if t < seq_len - 1:
            # Rows whose last step is after t step back; rows that end at or before t wait.
            current = np.where(t < lengths - 1, history[t, rows, current], current)
        current = np.where(t == lengths - 1, last, current)
        paths[:, t] = current
    paths[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
    return paths


def _recursions(emissions: F32, lengths: I64, p: Potentials) -> tuple[F32, F32, I64]:
    """Time-major (seq_len, batch, tags) alphas and betas of the rows sorted longest first, and
    that order. alphas[t, b, j]: log-sum of the paths ending in tag j at step t; betas[t, b, i]:
    log-sum of the continuations from tag i at step t (the end score at a row's last step and on
    its padding). Alphas at padding are left unset."""
    seq_len = emissions.shape[1]
    order = np.argsort(-lengths, kind="stable")
    lengths = lengths[order]
    # Time-major: each step reads and writes one contiguous block.
    steps = np.ascontiguousarray(emissions[order].transpose(1, 0, 2))
    running = np.searchsorted(-lengths, -np.arange(seq_len + 1), side="left")  # rows with length > t
    forward = [_lse_plan(b, p.trans) for b in buckets(p.allowed)]
    backward = [_lse_plan(b, p.trans.T) for b in buckets(p.allowed.T)]
    alphas = np.empty_like(steps)
    alphas[0] = p.start + steps[0]
    for t in range(1, seq_len):
        n = int(running[t])
        if n == 0:
            break
        alphas[t, :n] = _lse_step(alphas[t - 1, :n], forward) + steps[t, :n]
    betas = np.empty_like(steps)
    betas[:] = p.end
    for t in range(seq_len - 2, -1, -1):
        n = int(running[t + 1])  # rows whose step t + 1 is real
        if n:
            betas[t, :n] = _lse_step(steps[t + 1, :n] + betas[t + 1, :n], backward)
    return alphas, betas, order


def _log_z(alphas: F32, lengths_sorted: I64, end: F32) -> npt.NDArray[np.float64]:
    last = np.maximum(lengths_sorted - 1, 0)
    final = alphas[last, np.arange(len(last))].astype(np.float64) + end
    top = final.max(axis=1)
    log_z: npt.NDArray[np.float64] = top + np.log(np.exp(final - top[:, None]).sum(axis=1))
    return log_z


def forward_backward(emissions: F32, lengths: I64, p: Potentials) -> tuple[F32, F32, F32]:
    """(alphas, betas, log Z), batch-major like the torch recursion: alphas carried unchanged over
    padding, betas the end score at a row's last step and on its padding."""
    batch, seq_len, _ = emissions.shape
    alphas, betas, order = _recursions(emissions, lengths, p)
    sorted_lengths = lengths[order]
    last = np.maximum(sorted_lengths - 1, 0)
    rows = np.arange(batch)
    at = np.minimum(np.arange(seq_len)[:, None], last[None, :])  # padding carries the last alpha
    alphas = alphas[at, rows[None, :]]
    log_z = _log_z(alphas, sorted_lengths, p.end).astype(np.float32)
    inverse = np.empty_like(order)
    inverse[order] = rows
    return alphas.transpose(1, 0, 2)[inverse], betas.transpose(1, 0, 2)[inverse], log_z[inverse]


def segment_log_probabilities(
    emissions: F32, lengths: I64, p: Potentials, paths: I64, rows: I64, first: I64, last: I64
) -> npt.NDArray[np.float64]:
    """log P(y_first..y_last = the path there) of item ``rows[k]`` for every k (``CRF.path_probabilities``),
    reading only the alphas, betas and path scores the segments need."""
    alphas, betas, order = _recursions(emissions, lengths, p)
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    sorted_row = inverse[rows]
    log_z = _log_z(alphas, lengths[order], p.end)
    tags = paths
    # The path's cumulative score of transitions and emissions after its first step.
    emitted = np.take_along_axis(emissions, tags[:, :, None], axis=2)[:, :, 0].astype(np.float64)
    moves = np.zeros_like(emitted)
    moves[:, 1:] = p.trans[tags[:, :-1], tags[:, 1:]]
    cumulative = np.cumsum(emitted + moves, axis=1)
    return (
        alphas[first, sorted_row, paths[rows, first]].astype(np.float64)
        + (cumulative[rows, last] - cumulative[rows, first])
        + betas[last, sorted_row, paths[rows, last]].astype(np.float64)
        - log_z[sorted_row]
    )


LsePlan = tuple[I64, I64 | None, F32, float, I64 | None]


def _lse_plan(bucket: Bucket, trans: F32) -> LsePlan:
    """(targets, shared sources, exp(moves - max) for a shared bucket or the moves of each target's
    sources (-inf where padded), max, per-target sources); ``trans`` is (source, target)."""
    if bucket.shared is not None:
        by_source = trans[np.ix_(bucket.shared, bucket.to)]
        top = float(by_source.max())
        return bucket.to, bucket.shared, np.exp(by_source - top), top, None
    assert bucket.per_target is not None and bucket.valid is not None
    moves = trans[bucket.per_target, bucket.to[:, None]]  # shape: (targets, k)
    # A padding source repeats a real one: it must add no mass to the sum.
    moves = np.where(bucket.valid, moves, -np.inf).astype(np.float32)
    return bucket.to, None, moves, 0.0, bucket.per_target


# Exponents are floored here: the terms of unlikely states drift 87-103 nats below the best one,
# where float32 exponentials become subnormal and a matrix product over subnormals runs a hundred
# times slower. Flooring at -60 adds at most (tags x e^-60 ~ 1e-24) of the total mass, far below
# float32's resolution.
_EXP_FLOOR = -60.0


def _lse_step(scores: F32, plans: list[LsePlan]) -> F32:
    """log-sum-exp of scores[:, source] + move over each target's allowed sources, bucket by bucket."""
    out = np.empty_like(scores)
    for to, shared, moves, move_top, per_target in plans:
        if shared is not None:
            sub = scores[:, shared]
            top = sub.max(axis=1, keepdims=True)
            summed = np.exp(np.maximum(sub - top, _EXP_FLOOR)) @ moves  # shape: (batch, targets)
            out[:, to] = np.log(np.maximum(summed, 1e-30)) + top + move_top
        else:
            assert per_target is not None
            # shape: (batch, targets, k)
            terms = scores[:, per_target] + moves[None]
            top = terms.max(axis=2)
            top = np.where(np.isfinite(top), top, 0.0)
            # -inf (padding sources) stays -inf: exp gives exactly 0, no subnormal
            shifted = np.maximum(terms - top[:, :, None], np.where(np.isinf(terms), -np.inf, _EXP_FLOOR))
            out[:, to] = np.log(np.maximum(np.exp(shifted).sum(axis=2), 1e-30)) + top
    return out

"""A linear-chain conditional random field, shared by every tagger that has a CRF head.

After kmkurn/pytorch-crf: batch-first, vectorised over batch x tags, looping only over time, with
padding handled by ``torch.where(mask, new, old)``. Additions over it:

- **constrained transitions**: an optional (start, transition, end) mask of allowed moves; disallowed
  moves get a large negative score, so neither Viterbi nor the marginals ever put weight on an invalid
  sequence (AllenNLP's ``allowed_transitions`` idea);
- **forward-backward**: per-token marginals, and the exact probability of any labelled segment of a
  path, which is the entity confidence the taggers report.

Masks must be left-aligned (every sequence's tokens first, padding after) with the first step on.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from medner_udf.models import crf_cpu

# Added to the score of disallowed moves. Finite (not -inf) so that logsumexp over a row of only
# disallowed moves stays finite and gradients stay defined; e^-10000 underflows to exactly 0.
_FORBIDDEN = -10000.0


class CRF(nn.Module):
    """Linear-chain CRF over ``num_tags`` tags.

    ``forward(emissions, tags, mask)`` returns the log-likelihood of ``tags`` (the caller negates it
    for a loss); ``decode`` runs Viterbi; ``marginals`` runs forward-backward.
    """

    def __init__(
        self,
        num_tags: int,
        allowed: tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], npt.NDArray[np.bool_]] | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be positive, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        nn.init.uniform_(self.start_transitions, -0.1, 0.1)
        nn.init.uniform_(self.end_transitions, -0.1, 0.1)
        nn.init.uniform_(self.transitions, -0.1, 0.1)

        if allowed is None:
            start_ok = np.ones(num_tags, dtype=bool)
            trans_ok = np.ones((num_tags, num_tags), dtype=bool)
            end_ok = np.ones(num_tags, dtype=bool)
        else:
            start_ok, trans_ok, end_ok = allowed
            if start_ok.shape != (num_tags,) or end_ok.shape != (num_tags,):
                raise ValueError(f"start/end masks must have shape ({num_tags},)")
            if trans_ok.shape != (num_tags, num_tags):
                raise ValueError(f"transition mask must have shape ({num_tags}, {num_tags})")
        # Buffers, not parameters: saved with the weights, so a loaded model keeps its constraints.
        self.register_buffer("start_penalty", _penalty(start_ok))
        self.register_buffer("transition_penalty", _penalty(trans_ok))
        self.register_buffer("end_penalty", _penalty(end_ok))
        self._viterbi_buckets, inverse = _viterbi_buckets(np.asarray(trans_ok, dtype=bool))
        self.register_buffer("_viterbi_inverse", inverse, persistent=False)
        # Typed aliases of the buffers above (nn.Module's __getattr__ is typed as Tensor | Module).
        self._viterbi_inverse: Tensor
        self.start_penalty: Tensor
        self.transition_penalty: Tensor
        self.end_penalty: Tensor

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    # ----------------------------------------------------------------------------------------------
    # Scores with the constraints applied
    def _start(self) -> Tensor:
        return self.start_transitions + self.start_penalty

    def _trans(self) -> Tensor:
        return self.transitions + self.transition_penalty

    def _end(self) -> Tensor:
        return self.end_transitions + self.end_penalty

    def _validate(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> None:
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags:
            raise ValueError(
                f"emissions must have shape (batch, seq_len, {self.num_tags}), got {tuple(emissions.shape)}"
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} != emissions' {tuple(emissions.shape[:2])}")
        if tags is not None and tags.shape != emissions.shape[:2]:
            raise ValueError(f"tags shape {tuple(tags.shape)} != emissions' {tuple(emissions.shape[:2])}")
        if emissions.size(1) > 0 and not bool(mask[:, 0].all()):
            raise ValueError("the first timestep of every sequence must be unmasked")

    # ----------------------------------------------------------------------------------------------
    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "sum") -> Tensor:
        """Log-likelihood of ``tags`` given ``emissions``.

        emissions: (batch, seq_len, num_tags); tags: (batch, seq_len) long; mask: (batch, seq_len) bool.
        reduction: ``none`` (per sequence), ``sum``, ``mean`` or ``token_mean``.
        """
        if reduction not in ("none", "sum", "mean", "token_mean"):
            raise ValueError(f"invalid reduction {reduction!r}")
        mask = mask.bool()
        self._validate(emissions, mask, tags)
        # fp32 even inside a caller's autocast region: the recursions' matmuls and exps in bf16
        # would cost the likelihood most of its precision.
        with torch.autocast(emissions.device.type, enabled=False):
            emissions = emissions.float()
            numerator = self._path_score(emissions, tags, mask)  # shape: (batch,)
            denominator: Tensor = _LogPartition.apply(  # type: ignore[no-untyped-call]
                emissions, mask, self._start(), self._trans(), self._end()
            )
        llh = numerator - denominator  # shape: (batch,)
        if reduction == "none":
            return llh
        if reduction == "sum":
            return llh.sum()
        if reduction == "mean":
            return llh.mean()
        return llh.sum() / mask.sum()

    def _path_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        batch = emissions.size(0)
        maskf = mask.to(emissions.dtype)
        ar = torch.arange(batch, device=emissions.device)
        # shape: (batch, seq_len): each step's emission score of its gold tag, padding zeroed
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2) * maskf
        moves = self._trans()[tags[:, :-1], tags[:, 1:]] * maskf[:, 1:]  # shape: (batch, seq_len - 1)
        lengths = mask.sum(dim=1)  # shape: (batch,)
        last_tags = tags[ar, lengths - 1]  # shape: (batch,)
        return self._start()[tags[:, 0]] + emitted.sum(1) + moves.sum(1) + self._end()[last_tags]

    def _alphas(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Forward log-scores; alphas[b, t, j] = log sum over paths ending in tag j at t."""
        return _alphas(emissions, mask, self._start(), self._trans())

    def _betas(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Backward log-scores; betas[b, t, i] = log sum over continuations from tag i at t."""
        return _betas(emissions, mask, self._trans(), self._end())

    # ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """Viterbi: the best allowed tag sequence of each item, unpadded."""
        paths, lengths = self.viterbi(emissions, mask)
        return [row[:n].tolist() for row, n in zip(paths, lengths.tolist(), strict=True)]

    @torch.no_grad()
    def viterbi(
        self, emissions: Tensor, mask: Tensor, prune: bool | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Best allowed tag ids of each item as one (batch, seq_len) array (padding: 0) and lengths.

        Each step scores only the moves the constraints allow, grouped in buckets of targets (with
        BIOES, I-X and E-X are reached from two tags each; O, B-X and S-X all from the same set of
        "closed" tags). For a bucket whose targets share their sources, a source whose score trails
        the best one by more than the spread of the bucket's transition scores can win no target,
        so ``prune`` scores only the sources within that distance. This is exact: the same maxima as
        the dense step, up to which of two exactly equal scores is picked. By default (``prune``
        None) a CPU batch goes to the NumPy recursion of ``crf_cpu`` (which prunes), anything else to
        the torch one without pruning (on a GPU, pruning's per-step synchronisation costs more than
        it saves); ``prune`` True or False forces the torch recursion.
        """
        mask = mask.bool()
        self._validate(emissions, mask)
        batch, seq_len, num_tags = emissions.shape
        lengths = mask.sum(dim=1).cpu().numpy().astype(np.int64)
        if seq_len == 0:
            return np.zeros((batch, 0), dtype=np.int64), lengths
        device = emissions.device
        if prune is None and device.type == "cpu":
            return crf_cpu.viterbi(emissions.float().numpy(), lengths, self.potentials()), lengths
        prune = bool(prune)
        trans = self._trans()
        buckets = []
        for to, frm in self._viterbi_buckets:
            to, frm = to.to(device), frm.to(device)
            if frm.dim() == 1:
                by_source = trans[frm.unsqueeze(1), to.unsqueeze(0)]  # shape: (bucket_from, bucket_to)
                spread = float(by_source.max() - by_source.min()) if prune else math.inf
                buckets.append((frm, by_source, spread))
            else:
                buckets.append((frm, trans[frm, to.unsqueeze(1)], math.inf))  # (bucket_to, k)
        score = self._start() + emissions[:, 0]  # shape: (batch, num_tags)
        # Backpointers in the smallest integer type that holds a tag id (a copy per step, not a stack).
        history = torch.empty((max(seq_len - 1, 0), batch, num_tags), dtype=_index_dtype(num_tags))
        for t in range(1, seq_len):
            bests, froms = [], []
            for frm, trans_g, spread in buckets:
                if frm.dim() == 1:
                    best, source = _shared_sources_step(score[:, frm], frm, trans_g, spread)
                else:
                    # A few sources per target (frm: (bucket_to, k)): elementwise maxima over k, far
                    # cheaper on a CPU than a reduction over a dimension of size k.
                    best, source = _running_max(
                        [(score[:, frm[:, i]] + trans_g[:, i], frm[:, i]) for i in range(frm.size(1))]
                    )
                bests.append(best)
                froms.append(source)
            best_all = torch.cat(bests, dim=1)[:, self._viterbi_inverse]  # shape: (batch, num_tags)
            history[t - 1] = torch.cat(froms, dim=1)[:, self._viterbi_inverse]
            score = torch.where(mask[:, t : t + 1], best_all + emissions[:, t], score)
        score = score + self._end()
        best_last = score.argmax(dim=1).cpu().numpy()
        return crf_cpu.backtrack(history.cpu().numpy(), best_last, lengths), lengths

    def potentials(self) -> crf_cpu.Potentials:
        """The constrained scores as arrays, for the CPU inference path (``crf_cpu``)."""
        return crf_cpu.Potentials(
            start=self._start().detach().float().cpu().numpy(),
            trans=self._trans().detach().float().cpu().numpy(),
            end=self._end().detach().float().cpu().numpy(),
            allowed=(self.transition_penalty == 0).cpu().numpy(),
        )

    @torch.no_grad()
    def forward_backward(
        self, emissions: Tensor, mask: Tensor, on_cpu: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(alphas, betas, log_z): shapes (batch, seq_len, tags), same, (batch,).

        On the CPU (``on_cpu`` None) the NumPy recursions of ``crf_cpu`` compute them.
        """
        mask = mask.bool()
        self._validate(emissions, mask)
        if on_cpu if on_cpu is not None else emissions.device.type == "cpu":
            lengths = mask.sum(dim=1).cpu().numpy().astype(np.int64)
            arrays = crf_cpu.forward_backward(emissions.float().cpu().numpy(), lengths, self.potentials())
            return tuple(torch.from_numpy(a).to(emissions.device) for a in arrays)  # type: ignore[return-value]
        alphas = self._alphas(emissions, mask)
        betas = self._betas(emissions, mask)
        log_z = torch.logsumexp(alphas[:, -1] + self._end(), dim=1)
        return alphas, betas, log_z

    @torch.no_grad()
    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """P(tag at t = j | emissions) for every step; padding rows are zero. Shape (batch, seq, tags)."""
        alphas, betas, log_z = self.forward_backward(emissions, mask)
        probs = torch.exp(alphas + betas - log_z[:, None, None])
        return probs * mask.unsqueeze(2)

    @torch.no_grad()
    def segment_probabilities(
        self,
        emissions: Tensor,
        mask: Tensor,
        paths: list[list[int]],
        segments: list[list[tuple[int, int]]],
    ) -> list[list[float]]:
        """Exact probability that item b's tags on steps [first, last) equal ``paths[b]`` there.

        P(y_first..y_last-1) = exp(alpha[first, y_first] + sum of transition and emission scores
        inside the segment + beta[last-1, y_last-1] - log Z). For a BIOES mention this is the
        probability that exactly this mention (type and both boundaries) is present.
        """
        rows = [b for b, segs in enumerate(segments) for _ in segs]
        firsts = [first for segs in segments for first, _ in segs]
        lasts = [last - 1 for segs in segments for _, last in segs]
        padded = np.zeros(tuple(mask.shape), dtype=np.int64)
        for b, path in enumerate(paths):
            padded[b, : len(path)] = path
        probs = self.path_probabilities(
            emissions,
            mask,
            padded,
            np.asarray(rows, np.int64),
            np.asarray(firsts, np.int64),
            np.asarray(lasts, np.int64),
        ).tolist()
        out: list[list[float]] = []
        for segs in segments:
            out.append(probs[: len(segs)])
            probs = probs[len(segs) :]
        return out

    @torch.no_grad()
    def path_probabilities(
        self,
        emissions: Tensor,
        mask: Tensor,
        paths: npt.NDArray[np.int64],
        rows: npt.NDArray[np.int64],
        first: npt.NDArray[np.int64],
        last: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.float64]:
        """Exact probability of each segment of ``paths`` (batch, seq_len): item ``rows[k]``, steps
        ``first[k]..last[k]`` inclusive, all segments at once.

        P(y_first..y_last) = exp(alpha[first, y_first] + the transition and emission scores of steps
        first+1..last along the path + beta[last, y_last] - log Z); the inner sum is a difference of
        the path's cumulative score. For a BIOES mention this is the probability that exactly this
        mention (type and both boundaries) is present.
        """
        if len(rows) == 0:
            return np.zeros(0, dtype=np.float64)
        if emissions.device.type == "cpu":
            mask = mask.bool()
            self._validate(emissions, mask)
            lengths = mask.sum(dim=1).numpy().astype(np.int64)
            on_cpu = crf_cpu.segment_log_probabilities(
                emissions.float().numpy(), lengths, self.potentials(), paths, rows, first, last
            )
            return np.clip(np.exp(on_cpu), 0.0, 1.0)
        alphas, betas, log_z = self.forward_backward(emissions, mask)
        device = emissions.device
        path = torch.from_numpy(paths).to(device)
        row, start, stop = (torch.from_numpy(a).to(device) for a in (rows, first, last))
        # shape: (batch, seq_len): each step's emission of its path tag, and the move into it
        emitted = emissions.float().gather(2, path.unsqueeze(2)).squeeze(2)
        moves = torch.zeros_like(emitted)
        moves[:, 1:] = self._trans().float()[path[:, :-1], path[:, 1:]]
        cumulative = (emitted + moves).double().cumsum(dim=1)
        log_p = (
            alphas[row, start, path[row, start]].double()
            + (cumulative[row, stop] - cumulative[row, start])
            + betas[row, stop, path[row, stop]].double()
            - log_z[row].double()
        )
        probabilities: npt.NDArray[np.float64] = log_p.exp().clamp(0.0, 1.0).cpu().numpy()
        return probabilities


class _LogPartition(torch.autograd.Function):
    """log Z of each sequence, with its gradient in closed form.

    The gradient of log Z is the expected feature count: the unary marginals for the emissions and
    the start/end scores, the summed pairwise marginals for the transitions. Computing them with one
    backward recursion is several times faster on a CPU than letting autograd replay the forward
    loop step by step (which records ~10 small ops per time step and accumulates a tags x tags
    gradient at each one).
    """

    @staticmethod
    def forward(
        ctx: Any, emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor, end: Tensor
    ) -> Tensor:
        alphas = _alphas(emissions.detach(), mask, start.detach(), trans.detach())
        log_z = torch.logsumexp(alphas[:, -1] + end.detach(), dim=1)  # shape: (batch,)
        ctx.save_for_backward(emissions.detach(), mask, trans.detach(), end.detach(), alphas, log_z)
        return log_z

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, Tensor, Tensor, Tensor]:
        emissions, mask, trans, end, alphas, log_z = ctx.saved_tensors
        betas = _betas(emissions, mask, trans, end)
        # shape: (batch, seq_len, tags): P(y_t = j), zero on padding, scaled by the incoming gradient
        unary = torch.exp(alphas + betas - log_z[:, None, None]) * grad[:, None, None]
        unary = torch.where(mask[:, :, None], unary, 0.0)
        lengths = mask.sum(dim=1)
        ar = torch.arange(emissions.size(0), device=emissions.device)
        grad_start = unary[:, 0].sum(0)
        grad_end = unary[ar, lengths - 1].sum(0)
        # Pairwise: P(y_t-1 = i, y_t = j) = exp(alpha[t-1, i] + trans[i, j] + e[t, j] + beta[t, j] - log Z),
        # summed over batch and steps as one matrix product of row-scaled factors. float64, because
        # the row scale exp(max alpha + max(e + beta) - log Z) can exceed float32's range when the
        # two maxima sit on tags that no allowed move joins.
        if emissions.size(1) > 1:
            left = alphas[:, :-1].double()
            right = (emissions[:, 1:] + betas[:, 1:]).double()
            left_max = left.max(dim=2, keepdim=True).values
            right_max = right.max(dim=2, keepdim=True).values
            trans_max = trans.max().double()
            scale = torch.exp(left_max + right_max + trans_max - log_z.double()[:, None, None])
            scale = torch.where(mask[:, 1:, None], scale * grad.double()[:, None, None], 0.0)
            a = torch.exp(left - left_max).reshape(-1, left.size(2))
            c = (torch.exp(right - right_max) * scale).reshape(-1, right.size(2))
            grad_trans = ((a.t() @ c) * torch.exp(trans.double() - trans_max)).to(trans.dtype)
        else:
            grad_trans = torch.zeros_like(trans)
        return unary, None, grad_start, grad_trans, grad_end


def _alphas(emissions: Tensor, mask: Tensor, start: Tensor, trans: Tensor) -> Tensor:
    """Forward log-scores, shape (batch, seq_len, tags); carried unchanged over padding."""
    seq_len = emissions.size(1)
    exp_trans, trans_max = _exp_shifted(trans)
    alpha = start + emissions[:, 0]  # shape: (batch, num_tags)
    alphas = [alpha]
    for t in range(1, seq_len):
        nxt = _log_matmul_exp(alpha, exp_trans, trans_max) + emissions[:, t]  # shape: (batch, tags_to)
        alpha = torch.where(mask[:, t : t + 1], nxt, alpha)
        alphas.append(alpha)
    return torch.stack(alphas, dim=1)


def _betas(emissions: Tensor, mask: Tensor, trans: Tensor, end: Tensor) -> Tensor:
    """Backward log-scores, shape (batch, seq_len, tags); at a sequence's last step, the end score."""
    seq_len = emissions.size(1)
    exp_trans_t, trans_max = _exp_shifted(trans.t())
    end = end.expand(emissions.size(0), -1)  # shape: (batch, num_tags)
    beta = end
    betas = [beta]
    for t in range(seq_len - 2, -1, -1):
        # shape: (batch, num_tags_to) x (num_tags_to, num_tags_from) -> (batch, num_tags_from)
        nxt = _log_matmul_exp(emissions[:, t + 1] + beta, exp_trans_t, trans_max)
        # Where t + 1 is padding, t is the last real step: its continuation is just the end score.
        beta = torch.where(mask[:, t + 1 : t + 2], nxt, end)
        betas.append(beta)
    betas.reverse()
    return torch.stack(betas, dim=1)


def _exp_shifted(trans: Tensor) -> tuple[Tensor, Tensor]:
    """(exp(trans - max), max): computed once per recursion, not once per step."""
    trans_max = trans.max()
    return torch.exp(trans - trans_max), trans_max


def _viterbi_buckets(trans_ok: npt.NDArray[np.bool_]) -> tuple[list[tuple[Tensor, Tensor]], Tensor]:
    """Group target tags by how many source tags may precede them, for a sparse Viterbi step.

    Returns buckets of (target tags (m,), allowed sources (m, k) or (k,) when all m share them,
    padded by repeating a source,
    which leaves a max unchanged) and the permutation that puts the buckets' outputs back in tag
    order. A tag no move reaches keeps source 0, whose move carries the forbidden penalty.
    """
    n = trans_ok.shape[0]
    sources = [np.flatnonzero(trans_ok[:, j]) for j in range(n)]
    sources = [s if len(s) else np.array([0]) for s in sources]
    small = [j for j in range(n) if len(sources[j]) <= 8]
    large = [j for j in range(n) if len(sources[j]) > 8]
    buckets = []
    order: list[int] = []
    for group in (small, large):
        if not group:
            continue
        k = max(len(sources[j]) for j in group)
        frm = np.stack([np.resize(sources[j], k) for j in group])  # np.resize repeats to length k
        if (frm == frm[0]).all():
            frm = frm[0]  # one shared source list (BIOES: every O/B/S target)
        buckets.append((torch.tensor(group), torch.from_numpy(frm).long()))
        order.extend(group)
    inverse = torch.from_numpy(np.argsort(np.array(order)))
    return buckets, inverse


def _log_matmul_exp(scores: Tensor, exp_trans: Tensor, trans_max: Tensor) -> Tensor:
    """log(exp(scores) @ exp(trans)), i.e. logsumexp_i(scores[b, i] + trans[i, j]), as one matmul.

    scores: (batch, n); exp_trans = exp(trans - trans_max), (n, m) -> (batch, m). Shifting by the
    maxima keeps exp() in range; the broadcast logsumexp it replaces is ~20x slower on a CPU with 165
    BIOES tags. A column reachable only through forbidden moves sums to exactly 0; the clamp turns
    its log into a large negative number (about -69 below the row maximum) instead of -inf, which
    would make gradients NaN.
    """
    score_max = scores.max(dim=1, keepdim=True).values  # shape: (batch, 1)
    summed = torch.exp(scores - score_max) @ exp_trans  # shape: (batch, m)
    return torch.log(summed.clamp_min(1e-30)) + score_max + trans_max


def _penalty(allowed: npt.NDArray[np.bool_]) -> Tensor:
    return torch.where(torch.from_numpy(np.asarray(allowed, dtype=bool)), 0.0, _FORBIDDEN)


def _index_dtype(num_tags: int) -> torch.dtype:
    return torch.int16 if num_tags <= torch.iinfo(torch.int16).max else torch.int32


def _shared_sources_step(
    scores: Tensor, frm: Tensor, by_source: Tensor, spread: float
) -> tuple[Tensor, Tensor]:
    """One Viterbi step for targets that share their sources ``frm``.

    scores: (batch, m) scores of the sources; by_source: (m, bucket_to) transition scores. Returns
    (best score, best source tag) per target, each (batch, bucket_to). Sources more than ``spread``
    behind the best cannot win any target (see ``CRF.viterbi``), so when few are within it only the
    top ones are scored.
    """
    m = scores.size(1)
    if spread < math.inf and m > 8:
        top = scores.amax(dim=1, keepdim=True)  # shape: (batch, 1)
        k = int((scores >= top - spread).sum(dim=1).max())
        if k <= 8:
            top_scores, top_index = scores.topk(k, dim=1, sorted=False)  # shape: (batch, k)
            # shape: (batch, 1) + (batch, bucket_to) per kept source
            return _running_max(
                [
                    (top_scores[:, i : i + 1] + by_source[top_index[:, i]], frm[top_index[:, i : i + 1]])
                    for i in range(k)
                ]
            )
    # shape: (batch, m, 1) + (m, bucket_to) -> max over sources
    best, arg = (scores.unsqueeze(2) + by_source).max(dim=1)
    return best, frm[arg]


def _running_max(candidates: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Elementwise best of (score, source) candidates, each (batch, targets) (sources broadcast);
    the first of equal scores wins, as in ``Tensor.max``."""
    best, source = candidates[0]
    source = source.expand_as(best)
    for score, src in candidates[1:]:
        better = score > best
        best = torch.where(better, score, best)
        source = torch.where(better, src.expand_as(best), source)
    return best, source

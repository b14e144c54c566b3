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

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

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
        mask = mask.bool()
        self._validate(emissions, mask)
        batch, seq_len, _ = emissions.shape
        if seq_len == 0:
            return [[] for _ in range(batch)]
        trans = self._trans()
        # Each bucket scores only the moves the constraints allow: with BIOES, I-X and E-X can be
        # reached from two tags each, so most of the (tags x tags) work of a dense step is skipped.
        device = emissions.device
        buckets = []
        for to, frm in self._viterbi_buckets:
            to, frm = to.to(device), frm.to(device)
            if frm.dim() == 1:
                buckets.append((to, frm, trans[frm.unsqueeze(0), to.unsqueeze(1)]))  # (bucket_to, k)
            else:
                buckets.append((to, frm, trans[frm, to.unsqueeze(1)]))
        score = self._start() + emissions[:, 0]  # shape: (batch, num_tags)
        history = []
        for t in range(1, seq_len):
            bests, froms = [], []
            for _, frm, trans_g in buckets:
                if frm.dim() == 1:  # every target shares one source list: broadcast, no gather
                    # shape: (batch, 1, bucket_from) + (bucket_to, bucket_from)
                    candidates = score[:, frm].unsqueeze(1) + trans_g
                    best, arg = candidates.max(dim=2)  # shape: (batch, bucket_to) each
                    froms.append(frm[arg])
                else:
                    # shape: (batch, bucket_to, bucket_from)
                    candidates = score[:, frm] + trans_g
                    best, arg = candidates.max(dim=2)
                    froms.append(
                        torch.gather(frm.expand(arg.size(0), -1, -1), 2, arg.unsqueeze(2)).squeeze(2)
                    )
                bests.append(best)
            best_all = torch.cat(bests, dim=1)[:, self._viterbi_inverse]  # shape: (batch, num_tags)
            best_from = torch.cat(froms, dim=1)[:, self._viterbi_inverse]
            score = torch.where(mask[:, t : t + 1], best_all + emissions[:, t], score)
            history.append(best_from)
        score = score + self._end()
        lengths = mask.sum(dim=1).tolist()
        best_last = score.argmax(dim=1).tolist()
        hist = torch.stack(history, dim=1).cpu().numpy() if history else None  # (batch, seq_len-1, tags)
        paths: list[list[int]] = []
        for b in range(batch):
            tag = best_last[b]
            path = [tag]
            for t in range(lengths[b] - 2, -1, -1):
                assert hist is not None
                tag = int(hist[b, t, tag])
                path.append(tag)
            path.reverse()
            paths.append(path)
        return paths

    @torch.no_grad()
    def forward_backward(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(alphas, betas, log_z): shapes (batch, seq_len, tags), same, (batch,)."""
        mask = mask.bool()
        self._validate(emissions, mask)
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
        alphas, betas, log_z = self.forward_backward(emissions, mask)
        alphas_np = alphas.float().cpu().numpy()
        betas_np = betas.float().cpu().numpy()
        log_z_np = log_z.float().cpu().numpy()
        emissions_np = emissions.float().cpu().numpy()
        trans = self._trans().detach().float().cpu().numpy()
        out: list[list[float]] = []
        for b, (path, segs) in enumerate(zip(paths, segments, strict=True)):
            probs = []
            for first, last in segs:
                tags = path[first:last]
                log_p = alphas_np[b, first, tags[0]] + betas_np[b, last - 1, tags[-1]] - log_z_np[b]
                for i in range(1, len(tags)):
                    log_p += trans[tags[i - 1], tags[i]] + emissions_np[b, first + i, tags[i]]
                probs.append(float(min(1.0, max(0.0, np.exp(log_p)))))
            out.append(probs)
        return out


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
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor, None, Tensor, Tensor, Tensor]:
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

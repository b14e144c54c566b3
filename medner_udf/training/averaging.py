"""Polyak averaging of weights: the exponential moving average the trainer can score and keep."""

from __future__ import annotations

from collections.abc import Sequence

import torch


class WeightAverage:
    """An exponential moving average of parameters, with the usual warm-up
    ``min(decay, (1 + n) / (10 + n))`` so early averages are not dominated by the random init.
    ``swap()`` exchanges the live and averaged weights in place (call it twice to go back)."""

    def __init__(self, params: Sequence[torch.nn.Parameter], decay: float) -> None:
        self.params = list(params)
        self.decay = decay
        self.average = [p.detach().clone() for p in self.params]
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for avg, p in zip(self.average, self.params, strict=True):
            avg.lerp_(p.detach(), 1.0 - decay)

    @torch.no_grad()
    def swap(self) -> None:
        for avg, p in zip(self.average, self.params, strict=True):
            tmp = p.detach().clone()
            p.copy_(avg)
            avg.copy_(tmp)

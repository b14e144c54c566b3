"""The exponential moving average of weights used by the train job (``ema_decay``)."""

from __future__ import annotations

import pytest
import torch

from medner_udf.training.averaging import WeightAverage
from medner_udf.training.settings import OptimSettings


def test_weight_average_follows_the_warmed_up_recurrence_and_swaps_back() -> None:
    p = torch.nn.Parameter(torch.tensor([0.0, 10.0]))
    avg = WeightAverage([p], decay=0.9)
    want = p.detach().clone()
    for n, value in enumerate([1.0, 2.0, 3.0, 4.0, 5.0], start=1):
        with torch.no_grad():
            p.fill_(value)
        avg.update()
        decay = min(0.9, (1 + n) / (10 + n))
        want = decay * want + (1 - decay) * torch.full_like(want, value)
    torch.testing.assert_close(avg.average[0], want)
    avg.swap()
    torch.testing.assert_close(p.detach(), want)  # the model now holds the average
    avg.swap()
    torch.testing.assert_close(p.detach(), torch.full((2,), 5.0))  # and the live weights again


def test_train_settings_reject_an_ema_decay_outside_0_1() -> None:
    with pytest.raises(ValueError, match="ema_decay"):
        OptimSettings(ema_decay=1.0)

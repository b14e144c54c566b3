"""The training engine's shared pieces: batching, the learning-rate schedules, the optimiser."""

from __future__ import annotations

import random

import pytest
import torch

from medner_udf.training.loop import Schedule, bucketed_batches, make_optimizer
from medner_udf.training.settings import OptimSettings


def test_bucketed_batches_cover_every_item_once_with_similar_lengths() -> None:
    items = [random.Random(1).randint(1, 300) for _ in range(1000)]
    indexed = list(enumerate(items))
    batches = bucketed_batches(indexed, 8, random.Random(0), lambda item: item[1])
    assert sorted(i for batch in batches for i, _ in batch) == list(range(1000))
    assert all(1 <= len(b) <= 8 for b in batches)
    # Sorted within pools of 50 batches: the spread inside a batch is far below the data's.
    spread = sum(max(n for _, n in b) - min(n for _, n in b) for b in batches) / len(batches)
    assert spread < 20
    again = bucketed_batches(indexed, 8, random.Random(0), lambda item: item[1])
    assert again == batches  # the seed decides the order


def _lrs_after_epochs(settings: OptimSettings, dev_f1s: list[float]) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([{"params": [param]}], settings)
    schedule = Schedule(optimizer, settings, steps_per_epoch=1)
    out = []
    for f1 in dev_f1s:
        optimizer.step()  # no gradients: changes nothing, but schedulers expect a step first
        schedule.after_epoch(f1)
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_plateau_halves_after_n_epochs_without_a_strict_gain_and_again_n_later() -> None:
    settings = OptimSettings(learning_rate=1.0, schedule="plateau", lr_halve_after=3)
    # best at epoch 2; epochs 3, 4, 5 bring nothing (an equal score is no gain): halve after 5;
    # 6, 7, 8 still nothing: halve again; epoch 9 improves.
    f1s = [0.1, 0.5, 0.4, 0.5, 0.3, 0.2, 0.2, 0.2, 0.6]
    assert _lrs_after_epochs(settings, f1s) == [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    off = OptimSettings(learning_rate=1.0, schedule="plateau", lr_halve_after=0)
    assert _lrs_after_epochs(off, f1s) == [1.0] * len(f1s)


def test_inverse_schedule_is_ma_and_hovy_decay_per_epoch() -> None:
    settings = OptimSettings(optimizer="sgd", learning_rate=1.0, schedule="inverse", lr_decay=0.05)
    lrs = _lrs_after_epochs(settings, [0.0, 0.0, 0.0])
    assert lrs == pytest.approx([1 / 1.05, 1 / 1.10, 1 / 1.15])


def test_linear_schedule_warms_up_then_decays_to_zero_per_step() -> None:
    settings = OptimSettings(learning_rate=1.0, schedule="linear", warmup_fraction=0.2, epochs=2)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = make_optimizer([{"params": [param]}], settings)
    schedule = Schedule(optimizer, settings, steps_per_epoch=5)  # 10 steps, 2 of warm-up
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(10):
        optimizer.step()
        schedule.after_step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0])


def test_optimizer_groups_keep_their_own_rates() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    settings = OptimSettings(optimizer="adamw", learning_rate=0.1, weight_decay=0.01)
    optimizer = make_optimizer([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 0.0}], settings)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [(g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [(0.1, 0.01), (0.5, 0.0)]

"""Partition count of the tagging pass: whole waves over the task slots, bounded rows per task."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from medner_udf.extraction.planning import choose_partitions


def test_partitions_fill_every_wave() -> None:
    # The case: 12,000 notes on 2 cores were 3 partitions, the last wave half empty.
    assert choose_partitions(12_000, 2, 5_000) == 4
    assert choose_partitions(4_000, 2, 5_000) == 2
    assert choose_partitions(10, 8, 5_000) == 8  # one wave: every core gets a (small) task
    assert choose_partitions(0, 2, 5_000) == 2
    assert choose_partitions(100_001, 16, 1_000) == 112  # 7 waves of 16


@given(n=st.integers(0, 2_000_000), slots=st.integers(1, 256), rows=st.integers(1, 50_000))
def test_partitions_are_whole_waves_within_the_row_bound_and_minimal(n: int, slots: int, rows: int) -> None:
    parts = choose_partitions(n, slots, rows)
    assert parts % slots == 0
    assert math.ceil(n / parts) <= rows  # no task above the bound
    if parts > slots:  # one wave fewer would break the bound
        assert math.ceil(n / (parts - slots)) > rows


def test_partitions_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="task_slots"):
        choose_partitions(10, 0, 5)

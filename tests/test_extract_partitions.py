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


def test_long_notes_get_more_tasks_of_bounded_text() -> None:
    # 4,000 notes fit one wave of 2 by rows, but 4,000 notes of 50,000 characters (200 M) at
    # 20 M characters per task need 10 tasks: 5 waves of 2.
    assert choose_partitions(4_000, 2, 5_000, 4_000 * 3_000, 20_000_000) == 2
    assert choose_partitions(4_000, 2, 5_000, 4_000 * 50_000, 20_000_000) == 10
    assert choose_partitions(4_000, 2, 5_000, 4_000 * 50_000, None) == 2  # no character bound


@given(
    n=st.integers(0, 200_000),
    chars=st.integers(0, 10**10),
    slots=st.integers(1, 64),
    per_task=st.integers(1, 10**8),
)
def test_partitions_hold_the_character_bound_on_average(
    n: int, chars: int, slots: int, per_task: int
) -> None:
    parts = choose_partitions(n, slots, 5_000, chars, per_task)
    assert parts % slots == 0
    assert chars / parts <= per_task and math.ceil(n / parts) <= 5_000


def test_partitions_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="task_slots"):
        choose_partitions(10, 0, 5)
    with pytest.raises(ValueError, match="chars_per_partition"):
        choose_partitions(10, 2, 5, 100, 0)

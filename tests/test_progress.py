"""Progress: bars on a terminal, a few plain log lines elsewhere, nothing when quiet."""

from __future__ import annotations

import logging

import pytest

from medner_udf.progress import Progress


def test_off_a_terminal_progress_is_log_lines_with_rate_and_eta(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="medner.progress"),
        Progress(4, "epoch 1", interval=0.0, terminal=False) as bar,
    ):
        for _ in range(4):
            bar.step(loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    # One line per step but the last (the loop's end is the caller's own log line), never a bar.
    assert len(lines) == 3
    assert lines[0].startswith("epoch 1: 1/4 batches (") and "/s, ETA " in lines[0] and "loss 0.5" in lines[0]
    assert "\r" not in capsys.readouterr().err


def test_off_a_terminal_lines_come_at_most_every_interval(caplog: pytest.LogCaptureFixture) -> None:
    with (
        caplog.at_level(logging.INFO, logger="medner.progress"),
        Progress(1000, "epoch 1", interval=3600.0, terminal=False) as bar,
    ):
        for _ in range(1000):
            bar.step()
    assert caplog.records == []


def test_on_a_terminal_a_bar_is_drawn_and_quiet_draws_nothing(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    with caplog.at_level(logging.INFO, logger="medner.progress"):
        with Progress(3, "epoch 2", interval=0.0, terminal=True) as bar:
            for _ in range(3):
                bar.step()
        assert "epoch 2" in capsys.readouterr().err and caplog.records == []
        with Progress(3, "epoch 3", interval=0.0, terminal=True, enabled=False) as bar:
            for _ in range(3):
                bar.step()
        with Progress(3, "epoch 4", interval=0.0, terminal=False, enabled=False) as bar:
            for _ in range(3):
                bar.step()
    assert capsys.readouterr().err == "" and caplog.records == []

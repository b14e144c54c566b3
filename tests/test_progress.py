"""Progress: bars on a terminal, a few plain log lines elsewhere, nothing when quiet."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from medner_udf.progress import QUIET_ENV, Progress, progress_silenced


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


def test_silenced_progress_draws_no_bar_and_logs_no_line_even_on_a_terminal(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(QUIET_ENV, "1")
    with caplog.at_level(logging.INFO, logger="medner.progress"):
        for terminal in (True, False):
            with Progress(3, "epoch 1", interval=0.0, terminal=terminal) as bar:
                for _ in range(3):
                    bar.step(loss=0.1)
    assert capsys.readouterr().err == "" and caplog.records == []


def test_medner_quiet_silences_this_process_its_children_and_library_bars(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner
    from transformers.utils import logging as hf_logging

    from medner_udf.cli.main import main

    monkeypatch.delenv(QUIET_ENV, raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert not progress_silenced()
    hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        args = ["--quiet", "corpus-stats", "--corpus", str(tiny_corpus), "--plot", str(tmp_path / "p.png")]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        # spark-submit children (medner demo) inherit the environment, so they are quiet too
        assert progress_silenced() and os.environ[QUIET_ENV] == "1"
        assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]

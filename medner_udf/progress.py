"""Progress that fits where it runs: a bar on a terminal, log lines everywhere else.

Under Airflow, spark-submit or a redirect, a progress bar redraws itself as text: hundreds of
``epoch 1:  7%|...`` fragments per epoch. So a bar is drawn only when standard error is a terminal;
otherwise a plain log line reports the count, rate and ETA at most every ``interval`` seconds, and
one line closes each loop. ``enabled=False`` (``train --quiet``) silences both, and so does
``silence_progress()`` (``medner --quiet``) for every loop of the process and of the processes it
starts (it sets ``MEDNER_QUIET=1``). Executors never use this; their library bars are off
(``quiet_library_progress``).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from types import TracebackType
from typing import Any

log = logging.getLogger("medner.progress")

QUIET_ENV = "MEDNER_QUIET"
# Read by huggingface_hub when it is first imported, by transformers through it.
_HF_BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"


def silence_progress() -> None:
    """No bars and no progress lines from here on, in this process and the ones it starts."""
    os.environ[QUIET_ENV] = "1"
    quiet_library_progress(False)


def progress_silenced() -> bool:
    """Whether ``silence_progress`` (or ``MEDNER_QUIET=1``) is in force."""
    return os.environ.get(QUIET_ENV, "").strip().lower() not in ("", "0", "false", "no")


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``with Progress(total, "epoch 3") as bar: ... bar.step(loss=0.12)``."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "batch",
        enabled: bool = True,
        interval: float = 30.0,
        terminal: bool | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.enabled = enabled and not progress_silenced()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.done = 0
        self.postfix: dict[str, Any] = {}
        self._bar: Any = None
        self._started = self._last = time.monotonic()

    def __enter__(self) -> Progress:
        if self.enabled and self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False)
        self._started = self._last = time.monotonic()
        return self

    def step(self, n: int = 1, **postfix: Any) -> None:
        self.done += n
        self.postfix.update(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix:
                self._bar.set_postfix({k: _fmt(v) for k, v in postfix.items()}, refresh=False)
            return
        now = time.monotonic()
        if self.enabled and now - self._last >= self.interval and self.done < self.total:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """``epoch 3: 120/400 batches (4.1/s, ETA 1:08) loss 0.123``."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}{'es' if self.unit.endswith('ch') else 's'}"
        if self.done < self.total and rate > 0:
            text += f" ({rate:.1f}/s, ETA {_duration((self.total - self.done) / rate)})"
        else:
            text += f" in {_duration(elapsed)}"
        if self.postfix:
            text += " " + " ".join(f"{k} {_fmt(v)}" for k, v in self.postfix.items())
        return text

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.close()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def quiet_library_progress(show: bool) -> None:
    """Hugging Face's own bars (weights loading) follow the same rule: only on a terminal, never
    when silenced. Cheap when transformers is not imported yet (an environment variable)."""
    if show and sys.stderr.isatty() and not progress_silenced():
        return
    os.environ[_HF_BARS_ENV] = "1"
    if "transformers" not in sys.modules:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]

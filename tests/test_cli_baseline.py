"""``medner baseline feature-crf``: flags reach the baseline's ``run`` and its summary is printed
and written (the baseline itself is tested in tests/test_feature_crf_baseline.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from medner_udf.cli.main import main
from medner_udf.evaluation import feature_crf


def test_baseline_feature_crf_passes_its_flags_and_writes_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []

    def fake_run(corpus: Path, c1: float, c2: float, max_iterations: int, grid: bool) -> dict[str, Any]:
        calls.append((corpus, c1, c2, max_iterations, grid))
        return {"test": {"strict_f1": 0.5}}

    monkeypatch.setattr(feature_crf, "run", fake_run)
    out = tmp_path / "reports" / "fcrf.json"
    argv = ["baseline", "feature-crf", "--corpus", str(tmp_path), "--c1", "0.2", "--max-iterations", "7"]
    result = CliRunner().invoke(main, [*argv, "--grid", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [(tmp_path, 0.2, feature_crf.DEFAULT_C2, 7, True)]
    assert json.loads(result.output) == {"test": {"strict_f1": 0.5}}
    assert json.loads(out.read_text()) == {"test": {"strict_f1": 0.5}}


@pytest.mark.parametrize("bad", [["--c1", "-1"], ["--max-iterations", "0"]])
def test_baseline_feature_crf_refuses_bad_penalties(bad: list[str]) -> None:
    result = CliRunner().invoke(main, ["baseline", "feature-crf", *bad])
    assert result.exit_code == 2
    assert bad[0] in result.output

"""bench/distilled_ensemble.py: the steps' wiring, resuming, and the table it prints."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from bench_scripts import load_bench_script


@pytest.fixture(name="bench", scope="module")
def _bench() -> ModuleType:
    return load_bench_script("distilled_ensemble")


def _value(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def _write_metrics(folder: Path, dev: float, test: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    figures = {"strict": {"f1": test}, "relaxed": {"f1": test + 0.1}, "macro_f1": test - 0.2}
    (folder / "metrics.json").write_text(json.dumps({"dev": {"strict": {"f1": dev}}, "test": figures}))


def test_each_step_reads_the_artifacts_the_steps_before_it_write(bench: ModuleType, tmp_path: Path) -> None:
    steps = dict(bench.commands(tmp_path, 14, 0.8, 1))
    assert list(steps) == ["bilstm", "minilm", "teacher", "distilled", "distilled+minilm"]
    # medner train writes <output-dir>/<run.name or the profile's name>/<run.version>.
    assert (
        bench.artifact(tmp_path, "bilstm", 14)
        == Path(_value(steps["bilstm"], "--output-dir")[0]) / ("maccrobat-bilstm-cnn-crf") / "s14"
    )
    assert "run.version=s14" in steps["distilled"]
    student = Path(_value(steps["distilled"], "--output-dir")[0]) / "bilstm-distilled" / "s14"
    assert "run.name=bilstm-distilled" in steps["distilled"] and student == bench.artifact(
        tmp_path, "distilled", 14
    )
    assert f"inputs.teacher={bench.artifact(tmp_path, 'teacher', 14)}" in steps["distilled"]
    assert "inputs.distill_weight=0.8" in steps["distilled"]
    assert _value(steps["teacher"], "--member") == [
        str(bench.artifact(tmp_path, "bilstm", 14)),
        str(bench.artifact(tmp_path, "minilm", 14)),
    ]
    assert _value(steps["distilled+minilm"], "--member") == [
        str(bench.artifact(tmp_path, "distilled", 14)),
        str(bench.artifact(tmp_path, "minilm", 14)),
    ]
    for step in ("teacher", "distilled+minilm"):
        _, name = bench.STEPS[step]
        assert _value(steps[step], "--name") == [name]
        assert Path(_value(steps[step], "--output-dir")[0]) / name / "s14" == bench.artifact(
            tmp_path, step, 14
        )


def test_a_rerun_resumes_after_the_last_finished_step(
    bench: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_metrics(bench.artifact(tmp_path, "bilstm", 13), 0.58, 0.66)
    _write_metrics(bench.artifact(tmp_path, "minilm", 13), 0.59, 0.67)
    ran: list[list[str]] = []

    def fake_run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        ran.append(cmd)
        return subprocess.CompletedProcess(cmd, 1 if "inputs.distill_weight=0.8" in cmd else 0)

    monkeypatch.setattr(bench.subprocess, "run", fake_run)
    with pytest.raises(SystemExit, match="step distilled failed"):
        bench.run_seed(tmp_path, 13, 0.8, 1)
    assert [cmd[3] for cmd in ran] == ["ensemble", "train"]  # teacher, then the failing student


def test_the_table_gives_each_seed_and_the_mean_and_spread(bench: ModuleType, tmp_path: Path) -> None:
    _write_metrics(bench.artifact(tmp_path, "teacher", 13), 0.61, 0.69)
    _write_metrics(bench.artifact(tmp_path, "teacher", 14), 0.62, 0.71)
    _write_metrics(bench.artifact(tmp_path, "bilstm", 13), 0.58, 0.66)
    table = bench.summarise(tmp_path, [13, 14]).splitlines()
    teacher = next(line for line in table if line.startswith("| teacher |"))
    assert (
        teacher
        == "| teacher | 0.6900 | 0.7100 | 0.6150 ± 0.0071 | 0.7000 ± 0.0141 | 0.8000 ± 0.0141 | 0.5000 ± 0.0141 |"
    )
    assert next(line for line in table if line.startswith("| bilstm |")).startswith(
        "| bilstm | 0.6600 | - | 0.5800 |"
    )
    assert next(line for line in table if line.startswith("| minilm |")).endswith("| - | - | - | - | - | - |")

"""The import-direction contracts (pyproject.toml, ``[tool.importlinter]``): they hold, they can
fail, and the light extraction modules really leave torch out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the ``medner_udf`` found first on the path under ``root``, with the
    contracts of ``root/pyproject.toml``."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_its_import_contracts() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "bad_import", "reported"),
    [
        # A lower layer reaching up: the layers contract breaks.
        ("text/types.py", "from medner_udf.extraction import schemas", "medner_udf.text.types -> medner_udf.extraction.schemas"),
        # The SQL views pulling in the executor, and through it the taggers and torch.
        ("extraction/sql.py", "from medner_udf.extraction import executor", "medner_udf.extraction.sql -> medner_udf.extraction.executor"),
        # A tagger drawing progress would draw it on the executors, which load taggers.
        ("taggers/base.py", "from medner_udf.progress import Progress", "medner_udf.taggers.base -> medner_udf.progress"),
    ],
)  # fmt: skip
def test_a_wrong_import_breaks_the_contracts(
    tmp_path: Path, module: str, bad_import: str, reported: str
) -> None:
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "conf")
    shutil.copytree(ROOT / "medner_udf", tmp_path / "medner_udf", ignore=skip)
    target = tmp_path / "medner_udf" / module
    target.write_text(target.read_text(encoding="utf-8") + f"\n{bad_import}  # deliberately wrong\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 kept, 1 broken" in done.stdout
    assert reported in done.stdout


@pytest.mark.parametrize("module", ["schemas", "sql", "quality", "tables", "settings"])
def test_light_extraction_modules_import_without_torch(module: str) -> None:
    code = (
        f"import sys, medner_udf.extraction.{module}; "
        "heavy = sorted(m for m in ('torch', 'transformers', 'pyspark') if m in sys.modules); "
        "print(','.join(heavy))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == ""

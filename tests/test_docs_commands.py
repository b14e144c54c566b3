"""Every shell block in README.md and docs/*.md is run here or says why it is not.

A fenced block tagged ``bash``, ``sh``, ``shell`` or ``console`` is either

- run by ``test_docs_shell_block_runs`` (slow: they start Spark) in a temporary folder that holds the
  checkout's ``.venv``, ``jobs/`` and ``conf/``, a notes table of 10 corpus notes (``notes/`` and
  ``warehouse/notes``) and a small gazetteer artifact that fills ``models/<name>/<version>``; or
- preceded by ``<!-- not-run: why -->`` (a cluster, a GPU, hours of training), or by
  ``<!-- tested-by: tests/<file>.py::<test> -->`` naming the test that runs it (which must exist).

Every fenced block must name its language, so that a shell block cannot hide untagged.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")
MARKER = re.compile(r"^<!--\s*(not-run|tested-by):\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\S*)\s*$")
# What fills the docs' placeholders (the gazetteer artifact written by the fixture).
PLACEHOLDERS = {"<name>": "gaz", "<version>": "1"}
N_NOTES = 10


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    marker: tuple[str, str] | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path`` with their language and the marker line just above them."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        above = lines[i - 1].strip() if i > 0 else ""
        marker = MARKER.match(above)
        found.append(
            Block(
                path,
                i + 1,
                opening.group(1),
                "\n".join(lines[i + 1 : end]),
                (marker.group(1), marker.group(2)) if marker else None,
            )
        )
        i = end + 1
    return found


ALL_BLOCKS = [b for doc in DOCS for b in blocks(doc)]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in SHELL]
RUN_BLOCKS = [b for b in SHELL_BLOCKS if b.marker is None]


def test_docs_every_fenced_block_names_its_language() -> None:
    untagged = [b.id for b in ALL_BLOCKS if not b.lang]
    assert untagged == [], f"tag these blocks (```bash, ```text, ...): {untagged}"


def test_docs_shell_blocks_are_found() -> None:
    # The extraction itself can fail: the README's two set-up commands are a shell block.
    ids = {b.id for b in SHELL_BLOCKS}
    assert any(i.startswith("README.md:") for i in ids) and len(SHELL_BLOCKS) >= 6
    assert RUN_BLOCKS, "no documented shell block is run"


@pytest.mark.parametrize("block", [b for b in SHELL_BLOCKS if b.marker is not None], ids=lambda b: b.id)
def test_docs_shell_block_marker_says_why_or_names_an_existing_test(block: Block) -> None:
    assert block.marker is not None
    kind, value = block.marker
    if kind == "not-run":
        assert len(value) >= 15, f"{block.id}: say why the block is not run"
        return
    file, _, test = value.partition("::")
    target = ROOT / file
    assert target.is_file(), f"{block.id}: tested-by names a missing file {file}"
    if test:
        assert re.search(rf"^def {re.escape(test)}\(", target.read_text(encoding="utf-8"), re.M), (
            f"{block.id}: {file} has no test {test}"
        )


def test_docs_markers_sit_right_above_a_shell_block() -> None:
    # A marker separated from its block (or above a non-shell block) would silently mark nothing.
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if MARKER.match(line.strip()):
                nxt = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
                assert nxt is not None and nxt.group(1) in SHELL, (
                    f"{doc.name}:{i + 1}: marker not above a block"
                )


@pytest.fixture(scope="module")
def docs_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out as the docs assume: the checkout's venv, jobs and conf, notes, a model."""
    from medner_udf.corpus.maccrobat import corpus_path, read_corpus
    from medner_udf.taggers.gazetteer import GazetteerTagger

    corpus = corpus_path(None)
    if not corpus.is_dir():
        pytest.skip(f"no corpus at {corpus}")
    work = tmp_path_factory.mktemp("docs")
    for name in (".venv", "jobs", "conf", "dags", "requirements.lock"):
        (work / name).symlink_to(ROOT / name)
    docs = read_corpus(corpus, "all")[:N_NOTES]
    table = pa.table({"record_id": [d.doc_id for d in docs], "text": [d.text for d in docs]})
    for folder in (work / "notes", work / "warehouse" / "notes"):
        folder.mkdir(parents=True)
        pq.write_table(table, folder / "part-0.parquet")
    terms = [("fever", "Sign_symptom"), ("pain", "Sign_symptom"), ("CT", "Diagnostic_procedure")]
    for name in ("gaz", "bilstm", "maccrobat-bilstm-cnn-crf"):
        GazetteerTagger.from_terms(terms, name=name, version="1").save(work / "models" / name / "1")
    return work


def _filled(code: str) -> str:
    for placeholder, value in PLACEHOLDERS.items():
        code = code.replace(placeholder, value)
    # ``models/gaz/1`` for the generic placeholder, the named models exist as they are named
    return code


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("block", RUN_BLOCKS, ids=lambda b: b.id)
def test_docs_shell_block_runs(block: Block, docs_workdir: Path) -> None:
    venv_bin = ROOT / ".venv" / "bin"
    env = {
        **os.environ,
        # What the README asks for: .venv/bin on PATH, JAVA_HOME and PYSPARK_PYTHON set.
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "JAVA_HOME": os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
        "PYSPARK_PYTHON": str(venv_bin / "python"),
        "PYSPARK_DRIVER_PYTHON": str(venv_bin / "python"),
        "MPLBACKEND": "Agg",
    }
    script = "set -euo pipefail\n" + _filled(block.code)
    done = subprocess.run(
        ["bash", "-c", script], cwd=docs_workdir, env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]

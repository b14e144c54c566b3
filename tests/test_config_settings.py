"""The one settings loader: profiles that extend each other, nested groups, overrides by dotted path
or by a unique name, and errors that name the key."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from medner_udf.config import SettingsError, conf_dir, load_settings
from medner_udf.training.base import load_train_settings, trainable_kinds


@dataclass(frozen=True)
class Inner:
    size: int = 1
    rate: float = 0.5
    name: str | None = None


@dataclass(frozen=True)
class Other:
    flag: bool = False
    size_limit: int = 10


@dataclass(frozen=True)
class Outer:
    title: str = "t"
    inner: Inner = field(default_factory=Inner)
    other: Other = field(default_factory=Other)

    def __post_init__(self) -> None:
        if self.inner.size > 100:
            raise ValueError(f"inner.size must be <= 100, got {self.inner.size}")


TOML = """
[base]
title = "base"
[base.inner]
size = 3
rate = 0.25

[child]
extends = "base"
[child.inner]
size = 4
[child.other]
flag = true

[loop-a]
extends = "loop-b"
[loop-b]
extends = "loop-a"
"""


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(TOML)
    return path


def test_a_profile_extends_another_and_changes_only_what_it_names(conf: Path) -> None:
    s = load_settings(Outer, conf, table="child")
    assert s == Outer("base", Inner(size=4, rate=0.25), Other(flag=True))


def test_overrides_by_dotted_path_or_unique_name_are_converted(conf: Path) -> None:
    s = load_settings(Outer, conf, {"inner.size": "7", "flag": "yes", "rate": "0.1", "name": "none"}, "base")
    assert s.inner == Inner(size=7, rate=0.1, name=None) and s.other.flag is True


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"sise": "3"}, r"unknown setting\(s\) \['sise'\] for Outer; did you mean size"),
        ({"inner.size": "three"}, r"setting inner\.size: expected int, got 'three'"),
        ({"flag": "maybe"}, r"setting other\.flag: expected true/false"),
        ({"inner.size": "101"}, r"inner\.size must be <= 100"),
    ],
)
def test_bad_overrides_name_the_key(conf: Path, overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(Outer, conf, overrides, "base")


def test_a_name_two_groups_share_must_be_given_by_its_path(conf: Path) -> None:
    @dataclass(frozen=True)
    class Twice:
        a: Inner = field(default_factory=Inner)
        b: Inner = field(default_factory=Inner)

    with pytest.raises(SettingsError, match=r"'size' is ambiguous for Twice: say a\.size or b\.size"):
        load_settings(Twice, None, {"size": "2"})
    assert load_settings(Twice, None, {"b.size": "2"}).b.size == 2


def test_profile_errors_name_the_file_and_its_profiles(conf: Path) -> None:
    with pytest.raises(SettingsError, match=r"has no profile \[nope\]; its profiles: base, child"):
        load_settings(Outer, conf, table="nope")
    with pytest.raises(SettingsError, match="extend each other in a loop: loop-a -> loop-b -> loop-a"):
        load_settings(Outer, conf, table="loop-a")


def test_the_defaults_ship_inside_the_package_and_every_train_profile_loads() -> None:
    assert (conf_dir() / "train.toml").is_file() and (conf_dir() / "extract.toml").is_file()
    assert {"bilstm-cnn-crf", "transformer"} <= set(trainable_kinds())
    for profile in ("bilstm-cnn-crf", "bilstm-cnn-crf-quick", "transformer", "transformer-plain"):
        settings = load_train_settings(None, profile=profile)
        assert settings.kind in trainable_kinds()
    quick = load_train_settings(None, profile="bilstm-cnn-crf-quick")
    shipped = load_train_settings("bilstm-cnn-crf")
    # The quick profile extends the shipped one: what it does not name stays the shipped value.
    assert quick.optim.ema_decay == shipped.optim.ema_decay == 0.998
    assert quick.model.lstm_hidden == 100 and shipped.model.lstm_hidden == 200


def test_conf_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDNER_CONF_DIR", str(tmp_path))
    assert conf_dir() == tmp_path
    monkeypatch.setenv("MEDNER_CONF_DIR", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="is not a folder"):
        conf_dir()

"""The tagger registry: kinds register where they are defined, and loading dispatches on them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from medner_udf.registry import UnknownKindError
from medner_udf.taggers.base import Tagger, load_tagger, registered_kinds
from medner_udf.taggers.gazetteer import GazetteerTagger


def test_registry_knows_the_builtin_kinds_from_their_own_modules() -> None:
    assert {"bilstm-cnn-crf", "transformer", "gazetteer", "stacked-bilstm-cnn-crf"} <= set(registered_kinds())
    assert Tagger.by_kind("gazetteer") is GazetteerTagger
    assert GazetteerTagger.kind == "gazetteer"


def test_registry_refuses_a_second_class_for_a_kind() -> None:
    with pytest.raises(ValueError, match=r"already registered by medner_udf\.taggers\.gazetteer"):

        @Tagger.register("gazetteer")
        class Impostor(GazetteerTagger):
            pass


def test_unknown_kind_names_the_known_ones(tmp_path: Path) -> None:
    GazetteerTagger.from_terms([("fever", "Sign_symptom")]).save(tmp_path)
    info = json.loads((tmp_path / "artifact.json").read_text())
    (tmp_path / "artifact.json").write_text(json.dumps({**info, "kind": "crystal-ball"}))
    with pytest.raises(UnknownKindError, match=r"no tagger kind 'crystal-ball'.*bilstm-cnn-crf.*gazetteer"):
        load_tagger(tmp_path)


def test_kind_from_a_module_named_in_the_environment(tmp_path: Path) -> None:
    # A fresh interpreter, as in a Spark worker: only the environment tells it where the kind is.
    (tmp_path / "site_kind.py").write_text(
        "from medner_udf.taggers.base import Tagger\n"
        "from medner_udf.taggers.gazetteer import GazetteerTagger\n"
        "@Tagger.register('site-gazetteer')\n"
        "class SiteGazetteer(GazetteerTagger):\n"
        "    pass\n"
    )
    code = "from medner_udf.taggers.base import registered_kinds; print(registered_kinds())"
    env = {"PYTHONPATH": str(tmp_path), "MEDNER_TAGGER_MODULES": "site_kind", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert "'site-gazetteer'" in out.stdout
    without = subprocess.run(
        [sys.executable, "-c", code], env={**env, "MEDNER_TAGGER_MODULES": ""}, capture_output=True, text=True
    )
    assert "site-gazetteer" not in without.stdout

"""Fixtures for the tests that start Spark: one session-scoped ``local[2]`` session for all of them
(UI off, few shuffle partitions), and a small real gazetteer artifact.

The Python workers get ``tests/`` on their ``PYTHONPATH`` and ``MEDNER_TAGGER_MODULES=fake_taggers``
(``spark.executorEnv.*``, which Spark hands to the workers in local and cluster modes alike), so
artifacts of the test-only kinds in tests/fake_taggers.py load inside them as a site plugin would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_taggers import MODULE as FAKE_TAGGERS_MODULE
from tiny_heads import SQL_TERMS, TERMS, attach_tiny_heads

from medner_udf.extraction.session import build_session
from medner_udf.taggers.base import TAGGERS
from medner_udf.taggers.gazetteer import GazetteerTagger

TESTS_DIR = Path(__file__).resolve().parents[1]
# What the workers need to import the test-only tagger kinds.
WORKER_ENV_CONF = {
    "spark.executorEnv.PYTHONPATH": str(TESTS_DIR),
    f"spark.executorEnv.{TAGGERS.env}": FAKE_TAGGERS_MODULE,
}


SPARK_TEST_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.python.worker.reuse": "true",
    "spark.sql.execution.arrow.maxRecordsPerBatch": "4",
    "spark.driver.memory": "1g",
    "spark.sql.session.timeZone": "UTC",
    **WORKER_ENV_CONF,
}


@pytest.fixture(scope="session")
def worker_env_conf() -> dict[str, str]:
    """Spark settings that let the Python workers import the test-only tagger kinds (for jobs
    submitted in another process)."""
    return dict(WORKER_ENV_CONF)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    session = build_session(SPARK_TEST_CONF, app_name="medner-tests", master="local[2]")
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def make_gazetteer(
    folder: Path, version: str = "1", terms: list[tuple[str, str]] = TERMS, name: str = "testgaz"
) -> Path:
    GazetteerTagger.from_terms(terms, name=name, version=version).save(folder)
    return folder


@pytest.fixture(scope="session")
def gazetteer_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gazetteer(tmp_path_factory.mktemp("models") / "testgaz" / "1")


@pytest.fixture
def gazetteer_factory(tmp_path: Path) -> Callable[[str], Path]:
    """Makes the test gazetteer under another version (a new model version of the same model)."""
    return lambda version: make_gazetteer(tmp_path / "models" / "testgaz" / version, version=version)


@pytest.fixture(scope="session")
def clinical_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test gazetteer with tiny assertion and relation heads attached (tests/tiny_heads.py)."""
    root = tmp_path_factory.mktemp("clinical")
    return attach_tiny_heads(make_gazetteer(root / "testgaz" / "1"), root / "heads")


@pytest.fixture(scope="session")
def clinical_sql_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gazetteer of ``SQL_TERMS`` (dosages, routes, lab tests, sub-procedures) with the tiny heads."""
    root = tmp_path_factory.mktemp("clinical-sql")
    tagger = make_gazetteer(root / "sqlgaz" / "1", terms=SQL_TERMS, name="sqlgaz")
    return attach_tiny_heads(tagger, root / "heads")

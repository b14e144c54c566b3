"""Building the SparkSession from ``conf/spark.toml``; only entry points (jobs, CLI) call this.

Library modules never create a session: they take one as an argument, so they import without
Spark running and tests can share one session.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medner_udf.config import SettingsError, conf_file, load_toml
from medner_udf.errors import MednerError, MednerUsageError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

DEFAULT_JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
JAVA_HINT = f"set JAVA_HOME to a Java 17 JDK (here: {DEFAULT_JAVA_HOME}); `medner doctor` checks the set-up"


class SparkStartError(MednerError):
    """The local Spark driver (its JVM) did not start: Java missing or the wrong one, no memory."""


def spark_conf(conf: dict[str, Any]) -> dict[str, str]:
    """The ``[spark]`` table of a config as Spark conf strings (booleans lower-cased)."""
    table = conf.get("spark", {})
    if not isinstance(table, dict):
        raise SettingsError("the [spark] section must be a table of spark.* settings")
    out = {}
    for key, value in table.items():
        if not key.startswith("spark."):
            raise SettingsError(f"Spark setting {key!r} must start with 'spark.'")
        out[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def load_spark_conf(path: str | Path | None = None) -> dict[str, str]:
    """The Spark settings of ``path`` (default: the package's ``conf/spark.toml``)."""
    return spark_conf(load_toml(path if path is not None else conf_file("spark.toml")))


def prepare_environment() -> None:
    """Point Spark at this interpreter and a JDK when the caller has not (the environment variables
    of docs/extraction.md, "Running it")."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if "JAVA_HOME" not in os.environ and Path(DEFAULT_JAVA_HOME).is_dir():
        os.environ["JAVA_HOME"] = DEFAULT_JAVA_HOME
    if "SPARK_HOME" not in os.environ:
        import pyspark

        # local-cluster masters start executors from SPARK_HOME; pip's pyspark ships one.
        os.environ["SPARK_HOME"] = str(Path(pyspark.__file__).parent)


def build_session(conf: dict[str, str], app_name: str = "medner", master: str | None = None) -> SparkSession:
    """A SparkSession with ``conf`` applied; ``master`` overrides ``spark.master`` when given.

    Under spark-submit the master and resources come from the command line, which wins over
    settings here only for keys not set in ``conf``; so the conf files leave ``spark.master`` out.
    """
    prepare_environment()
    check_java_home()
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if master is not None:
        builder = builder.master(master)
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except PySparkRuntimeError as exc:  # JAVA_GATEWAY_EXITED and friends; the JVM said why above
        raise SparkStartError(f"Spark did not start: {str(exc).splitlines()[0]}", hint=JAVA_HINT) from exc


def check_java_home() -> None:
    """A ``JAVA_HOME`` that names no Java is a setting error: say so before Spark fails obscurely."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and not (Path(java_home) / "bin" / "java").is_file():
        raise MednerUsageError(f"JAVA_HOME={java_home} holds no bin/java", hint=JAVA_HINT)


def spark_submit_command(
    script: str | Path, args: list[str], master: str, conf: dict[str, str] | None = None
) -> list[str]:
    """argv for ``spark-submit`` of ``script`` from the installed pyspark (entry points, benches)."""
    prepare_environment()
    submit = Path(os.environ["SPARK_HOME"]) / "bin" / "spark-submit"
    cmd = [str(submit), "--master", master]
    for key, value in (conf or {}).items():
        cmd += ["--conf", f"{key}={value}"]
    return [*cmd, str(script), *args]


def submit_environment() -> dict[str, str]:
    """The environment for a spark-submit child: this interpreter for driver and workers."""
    prepare_environment()
    env = dict(os.environ)
    env["PYSPARK_PYTHON"] = env.get("PYSPARK_PYTHON", sys.executable)
    env["PYSPARK_DRIVER_PYTHON"] = env.get("PYSPARK_DRIVER_PYTHON", sys.executable)
    return env

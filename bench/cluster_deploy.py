"""The extraction job on a cluster that has only Spark and a Python, end to end on ``local-cluster``.

    .venv/bin/python bench/cluster_deploy.py [--notes 12] [--skip-probe] [--keep]

What a cluster user does (docs/deployment.md), from a folder outside the checkout:

1. ``make pack`` (reused when up to date): ``dist/medner-env.tar.gz``, the wheel of this checkout and its
   locked dependencies in a venv packed by venv-pack, and ``dist/medner-extract.py``, the job script.
2. A work folder under the system temp dir holds the archive (a hard link), the job script, a gazetteer
   artifact built from the corpus' train split and a notes Parquet of test notes plus one empty note.
   The archive is unpacked there as ``medner-env/``: the client-mode driver's Python.
3. The documented ``spark-submit`` line (``submit_line``) runs from the work folder with the checkout's
   venv out of reach: no ``PYTHONPATH``, no ``PYSPARK_*`` variables, ``.venv/bin`` off ``PATH``.
   ``SPARK_HOME`` stands in for the cluster's Spark installation: a folder in the work folder whose
   ``bin``, ``jars`` and ``python`` link to the installed pyspark's (the JVM side and
   ``python/lib/pyspark.zip``, nothing of medner), so that the workers' folders
   (the ``work`` folder of ``SPARK_HOME``, one per app) lie outside the checkout too.
4. Checks: the tables equal what the same gazetteer gives in this process; every record has one status
   row; each executor's unpacked ``environment/`` holds the bytecode its Python workers wrote when they
   imported medner's executor module (the archive holds none: the job's own workers ran from it); and
   a probe application submitted the same way reports each Python worker's ``sys.prefix`` (the
   executor's ``./environment``) and where medner, torch and pyspark came from.

Prints the archive size and the timings (pack, unpack, submit, probe). The work folder, with the
executors' folders (1.4 GB each with their unpacked env), is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.extraction.session import submit_environment
from medner_udf.taggers.gazetteer import GazetteerTagger

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = Path("dist") / "medner-env.tar.gz"
JOB_SCRIPT = Path("dist") / "medner-extract.py"
DRIVER_ENV = "medner-env"
MASTER = "local-cluster[2,1,1024]"
N_EXECUTORS = 2
MODEL = "models/gaz/1"
# Variables that would hand the submitted job the checkout's Python or package.
SCRUBBED = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYSPARK_PYTHON",
    "PYSPARK_DRIVER_PYTHON",
    "VIRTUAL_ENV",
    "MEDNER_CONF_DIR",
    # Workers must be free to write bytecode into the unpacked env: that is the job's trace there.
    "PYTHONDONTWRITEBYTECODE",
)
EXECUTOR_PYC = "lib/python3.11/site-packages/medner_udf/extraction/__pycache__/executor.cpython-311.pyc"
APP_ID = re.compile(r"app ID (app-\d+-\d+)")

# The probe: the same session building as the job (medner's build_session over conf/spark.toml), then
# one task per slot reporting where its Python and packages live. One JSON line on stdout.
PROBE = """\
import json, os, sys, time

from medner_udf.extraction.session import build_session, load_spark_conf


def where(_rows=None):
    import medner_udf, pyspark, torch

    return [{"prefix": sys.prefix, "executable": sys.executable, "cwd": os.getcwd(), "pid": os.getpid(),
             "medner_udf": medner_udf.__file__, "torch": torch.__file__, "pyspark": pyspark.__file__}]


n_executors = int(sys.argv[1])
spark = build_session(load_spark_conf(), app_name="medner-deploy-probe")
sc = spark.sparkContext
deadline = time.monotonic() + 300
while sc._jsc.sc().getExecutorMemoryStatus().size() < n_executors + 1 and time.monotonic() < deadline:
    time.sleep(1)  # the driver counts as one: wait until every executor has registered
workers = sc.parallelize(range(4 * n_executors), 4 * n_executors).mapPartitions(where).collect()
print("PROBE " + json.dumps({"driver": where()[0], "workers": workers}))
spark.stop()
"""


class DeployCheckError(AssertionError):
    """The deployment did not do what docs/deployment.md says it does."""


@dataclass(frozen=True)
class Submitted:
    seconds: float
    stdout: str
    stderr: str
    app_id: str


def submit_line(
    script: str | Path, args: Sequence[str], driver_python: str = f"{DRIVER_ENV}/bin/python"
) -> list[str]:
    """argv of the documented client-mode spark-submit (docs/deployment.md, "local-cluster"), run from
    the work folder: executors unpack the archive as ./environment and run its Python; the driver runs
    the unpacked copy beside it."""
    return [
        "spark-submit",
        "--master",
        MASTER,
        "--archives",
        f"{ARCHIVE}#environment",
        "--conf",
        "spark.pyspark.python=./environment/bin/python",
        "--conf",
        f"spark.pyspark.driver.python={driver_python}",
        "--conf",
        "spark.executor.memory=768m",
        str(script),
        *args,
    ]


def job_args() -> list[str]:
    return ["--input", "notes", "--output", "warehouse", "--model", MODEL]


def submit_env(spark_home: Path) -> dict[str, str]:
    """The environment of the spark-submit child: the cluster's Spark and Java, nothing of the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["SPARK_HOME"] = str(spark_home)
    env["JAVA_HOME"] = submit_environment()["JAVA_HOME"]
    return env


def pack() -> float:
    """``make pack`` (a no-op when the archive is up to date); returns its wall seconds."""
    started = time.perf_counter()
    done = subprocess.run(["make", "pack"], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DeployCheckError(f"make pack failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def stage(work: Path, corpus: Path, n_notes: int) -> dict[str, str]:
    """Lay out the work folder; returns the notes by record id."""
    (work / "dist").mkdir(parents=True)
    try:
        os.link(ROOT / ARCHIVE, work / ARCHIVE)  # same filesystem: no copy of 418 MiB
    except OSError:
        shutil.copy2(ROOT / ARCHIVE, work / ARCHIVE)
    shutil.copy2(ROOT / JOB_SCRIPT, work / JOB_SCRIPT)
    GazetteerTagger.from_corpus(read_corpus(corpus, "train"), name="gaz", version="1").save(work / MODEL)
    docs = read_corpus(corpus, "test")[:n_notes]
    notes = {d.doc_id: d.text for d in docs} | {"empty-note": ""}
    (work / "notes").mkdir()
    pq.write_table(
        pa.table({"record_id": list(notes), "text": list(notes.values())}), work / "notes" / "part-0.parquet"
    )
    (work / "probe.py").write_text(PROBE)
    return notes


def stand_in_spark_home(work: Path) -> Path:
    """A Spark installation for the local-cluster run: links to the installed pyspark's parts."""
    import pyspark

    installed = Path(pyspark.__file__).resolve().parent
    home = work / "spark"
    home.mkdir()
    for part in ("bin", "jars", "python"):
        (home / part).symlink_to(installed / part, target_is_directory=True)
    return home


def unpack(work: Path) -> float:
    """The archive unpacked as the driver's environment (client mode: the driver runs on this host)."""
    started = time.perf_counter()
    (work / DRIVER_ENV).mkdir()
    # What docs/deployment.md says: `tar -xzf` (GNU tar unpacks the 1.4 GB several times faster than tarfile).
    subprocess.run(["tar", "-xzf", str(work / ARCHIVE), "-C", str(work / DRIVER_ENV)], check=True)
    return time.perf_counter() - started


def run_submit(argv: list[str], work: Path, env: dict[str, str]) -> Submitted:
    cmd = [str(Path(env["SPARK_HOME"]) / "bin" / argv[0]), *argv[1:]]
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join(line for line in done.stderr.splitlines() if " INFO " not in line)[-5000:]
        script = next(a for a in argv if a.endswith(".py"))
        raise DeployCheckError(f"spark-submit of {script} exited {done.returncode}:\n{tail}")
    found = APP_ID.search(done.stderr)
    if found is None:
        raise DeployCheckError("spark-submit's log names no application id (is the master local-cluster?)")
    return Submitted(seconds, done.stdout, done.stderr, found.group(1))


def _inside(path: str | Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def check_tables(work: Path, notes: dict[str, str]) -> int:
    """The tables hold what the gazetteer gives in this process, and one status row per note; returns
    the number of entity rows."""
    tagger = GazetteerTagger.load(work / MODEL)
    expected = {
        (rid, e.begin, e.end, e.label, e.text)
        for rid, ents in zip(notes, tagger.tag(list(notes.values())), strict=True)
        for e in ents
    }
    ents = DeltaTable(str(work / "warehouse" / "entities")).to_pyarrow_table().to_pylist()
    got = {(r["record_id"], r["begin"], r["end"], r["label"], r["text"]) for r in ents}
    if len(ents) != len(got) or got != expected:
        raise DeployCheckError(
            f"entities differ from the in-process gazetteer: {len(ents)} rows, {len(got - expected)} "
            f"unexpected, {len(expected - got)} missing"
        )
    status = DeltaTable(str(work / "warehouse" / "record_status")).to_pyarrow_table().to_pylist()
    by_record = {r["record_id"]: r["status"] for r in status}
    wanted = {rid: ("empty" if not text else "ok") for rid, text in notes.items()}
    if len(status) != len(notes) or by_record != wanted:
        raise DeployCheckError(f"record_status: {len(status)} rows for {len(notes)} notes, {by_record}")
    return len(ents)


def executor_dirs(spark_home: Path, app_id: str) -> list[Path]:
    return sorted(p for p in (spark_home / "work" / app_id).iterdir() if p.is_dir())


def check_job_workers(job: Submitted, driver_env: Path, spark_home: Path) -> list[Path]:
    """The job's driver ran medner from ``driver_env`` (its log names the call sites), each executor
    unpacked the archive, and its Python workers imported medner's executor module from there (they
    wrote its bytecode, which the archive does not hold)."""
    if f"{driver_env}/lib/python3.11/site-packages/medner_udf/" not in job.stderr:
        raise DeployCheckError(f"the job's log shows no driver call site in {driver_env}")
    dirs = executor_dirs(spark_home, job.app_id)
    if len(dirs) != N_EXECUTORS:
        raise DeployCheckError(f"{job.app_id} ran {len(dirs)} executors, expected {N_EXECUTORS}")
    for d in dirs:
        if not (d / "environment" / EXECUTOR_PYC).is_file():
            raise DeployCheckError(f"executor {d.name}: no Python worker imported medner from ./environment")
    return dirs


def check_probe(probe: dict[str, object], driver_env: Path, spark_home: Path, checkout: Path) -> set[str]:
    """The probe's driver ran in ``driver_env``, each worker in its executor's unpacked archive (none in
    the checkout), and pyspark came from the cluster's Spark; returns the workers' executor folders."""
    driver = probe["driver"]
    workers = probe["workers"]
    assert isinstance(driver, dict) and isinstance(workers, list)
    problems = []
    if Path(driver["prefix"]).resolve() != driver_env.resolve():
        problems.append(f"the driver ran in {driver['prefix']}, not in {driver_env}")
    for w in workers:
        env = Path(w["cwd"]) / "environment"
        if not env.is_dir() or Path(w["prefix"]).resolve() != env.resolve():
            problems.append(
                f"worker pid {w['pid']}: sys.prefix {w['prefix']} is not its executor's ./environment"
            )
        for package in ("medner_udf", "torch"):
            if not _inside(w[package], Path(w["prefix"])) or _inside(w[package], checkout):
                problems.append(f"worker pid {w['pid']}: {package} from {w[package]}, not the packed env")
        if not str(w["pyspark"]).startswith(str(spark_home / "python" / "lib" / "pyspark.zip")):
            problems.append(
                f"worker pid {w['pid']}: pyspark from {w['pyspark']}, not the cluster's pyspark.zip"
            )
    cwds = {str(w["cwd"]) for w in workers}
    if len(cwds) != N_EXECUTORS:
        problems.append(f"the probe's tasks ran on {len(cwds)} executors, expected {N_EXECUTORS}")
    if problems:
        raise DeployCheckError("; ".join(problems))
    return cwds


def parse_probe(stdout: str) -> dict[str, object]:
    line = next((ln for ln in stdout.splitlines() if ln.startswith("PROBE ")), None)
    if line is None:
        raise DeployCheckError("the probe printed no PROBE line")
    probe: dict[str, object] = json.loads(line.removeprefix("PROBE "))
    return probe


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--notes", type=int, default=12, help="test notes to tag (plus one empty note)")
    parser.add_argument(
        "--corpus", type=Path, default=None, help="MACCROBAT2020 folder [default: beside the checkout]"
    )
    parser.add_argument(
        "--work", type=Path, default=None, help="work folder (must not exist) [default: a temp dir]"
    )
    parser.add_argument("--skip-probe", action="store_true", help="do not submit the probe application")
    parser.add_argument("--keep", action="store_true", help="keep the work folder and the executors' folders")
    args = parser.parse_args(argv)

    work = (args.work or Path(tempfile.mkdtemp(prefix="medner-deploy-")) / "run").resolve()
    if _inside(work, ROOT):
        raise SystemExit(f"--work {work} is inside the checkout; the point is to run without it")
    figures: dict[str, object] = {"work": str(work)}
    try:
        figures["pack_s"] = round(pack(), 1)
        figures["archive_mb"] = round((ROOT / ARCHIVE).stat().st_size / 2**20, 1)
        notes = stage(work, corpus_path(args.corpus), args.notes)
        spark_home = stand_in_spark_home(work)
        figures["unpack_s"] = round(unpack(work), 1)
        env = submit_env(spark_home)

        job = run_submit(submit_line(JOB_SCRIPT, job_args()), work, env)
        figures["submit_s"] = round(job.seconds, 1)
        figures["entities"] = check_tables(work, notes)
        figures["job_executors"] = [str(d) for d in check_job_workers(job, work / DRIVER_ENV, spark_home)]
        if not args.skip_probe:
            probe = run_submit(submit_line("probe.py", [str(N_EXECUTORS)]), work, env)
            figures["probe_s"] = round(probe.seconds, 1)
            parsed = parse_probe(probe.stdout)
            figures["probe_executors"] = sorted(check_probe(parsed, work / DRIVER_ENV, spark_home, ROOT))
            workers = parsed["workers"]
            assert isinstance(workers, list)
            figures["worker_prefixes"] = sorted({w["prefix"] for w in workers})
    finally:
        if not args.keep:
            shutil.rmtree(work.parent if args.work is None else work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    main()

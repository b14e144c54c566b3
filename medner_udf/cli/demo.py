"""``medner demo``, the README's main command: from corpus to SQL on local Spark, in a few minutes.

1. Find the newest trained model under ``models/`` (the full model if one was trained, else the
   quick demo model), training the quick demo profile of ``conf/train.toml`` if there is none.
   When that model has no assertion or relation head attached, attach the newest trained ones
   (``models/maccrobat-assertion``, ``models/maccrobat-relations``), training them first with the
   ``[assertion]`` and ``[relations]`` profiles if there are none (linear models: about a minute).
   A model given with ``--model`` is used as it is.
2. Build a notes table (Parquet: ``record_id``, ``text``) from the corpus texts.
3. spark-submit the package's extraction script (``medner_udf/cli/jobs/extract.py``) on
   ``local[2]``: Delta tables under ``out/demo/warehouse`` (entities, relations, record_status).
   Right after heads were attached the run is ``--full``: the model version is unchanged, so an
   incremental run would skip the notes an earlier demo tagged without them.
4. Print the answers to sample SQL queries over the tables.

Paths are relative to the working directory (``models/``, ``out/demo``), so an installed medner
runs it anywhere; ``make demo`` runs it from the checkout.

    medner demo [--corpus PATH] [--out out/demo] [--model PATH] [--models-dir models]

(``python -m medner_udf.cli demo`` runs the same command.)
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq

from medner_udf.clinical.base import ASSERTION_DIR, HEAD_DIRS, RELATIONS_DIR, attach
from medner_udf.corpus.maccrobat import corpus_path, read_corpus
from medner_udf.errors import MednerError

log = logging.getLogger("medner.demo")


class JobFailedError(MednerError):
    """The spark-submit child failed. It has printed its own error (one or two lines for an expected
    failure), so this adds one line and passes the child's exit status on."""

    def __init__(self, returncode: int) -> None:
        super().__init__(
            f"the extraction job (spark-submit) failed with exit status {returncode}; its error is above"
        )
        # 2 (usage) and 1 (run time) pass through; a signal or a JVM status becomes 1.
        self.exit_code = returncode if returncode in (1, 2) else 1


FULL_MODEL = "maccrobat-bilstm-cnn-crf"
QUICK_PROFILE = "bilstm-cnn-crf-quick"
SAMPLE_QUERY = """
SELECT label, count(*) AS mentions, count(DISTINCT record_id) AS notes, round(avg(score), 3) AS mean_score
FROM entities GROUP BY label ORDER BY mentions DESC LIMIT 12
"""
CLINICAL_QUERIES = (
    """
SELECT label, count_if(assertion = 'present') AS present, count_if(assertion = 'absent') AS absent,
       count_if(assertion = 'possible') AS possible
FROM entities WHERE label IN ('Sign_symptom', 'Disease_disorder') GROUP BY label ORDER BY label
""",
    """
SELECT type, head_label, tail_label, count(*) AS relations FROM relations
GROUP BY type, head_label, tail_label ORDER BY relations DESC LIMIT 8
""",
)


def newest_artifact(models_dir: Path, name: str) -> Path | None:
    """The newest version (versions sort by time) of ``name`` that has a complete artifact."""
    versions = sorted(p for p in (models_dir / name).glob("*") if (p / "model.safetensors").is_file())
    return versions[-1] if versions else None


def ensure_model(models_dir: Path, corpus: Path) -> Path:
    from medner_udf.training.base import load_train_settings
    from medner_udf.training.loop import train

    settings = load_train_settings(
        None, profile=QUICK_PROFILE, overrides={"data.corpus": str(corpus), "run.output_dir": str(models_dir)}
    )
    for name in (FULL_MODEL, settings.run.name):
        found = newest_artifact(models_dir, name)
        if found is not None:
            log.info("using model %s", found)
            return found
    log.info("no model yet: training the quick demo profile (%s)", QUICK_PROFILE)
    return train(settings).artifact_dir


def ensure_heads(
    model: Path, models_dir: Path, corpus: Path, overrides: Mapping[str, str] | None = None
) -> bool:
    """Attach assertion and relation heads to ``model`` where it has none: the newest trained ones
    under ``models_dir``, trained first (``[assertion]``/``[relations]`` of conf/train.toml, with
    ``overrides``) when there are none. True when something was attached."""
    from medner_udf.training.base import load_train_settings
    from medner_udf.training.loop import train

    missing = [task for task in HEAD_DIRS if not (model / task / "artifact.json").is_file()]
    sources: dict[str, Path] = {}
    for task in missing:
        settings = load_train_settings(
            None,
            profile=task,
            overrides={
                "data.corpus": str(corpus),
                "run.output_dir": str(models_dir),
                **(overrides or {}),
            },
        )
        found = newest_artifact(models_dir, settings.run.name)
        if found is None:
            log.info("no %s model yet: training profile [%s]", task, task)
            found = train(settings).artifact_dir
        sources[task] = found
    if not sources:
        return False
    attach(model, assertion=sources.get(ASSERTION_DIR), relations=sources.get(RELATIONS_DIR))
    log.info("attached %s to %s", ", ".join(f"{t} {p}" for t, p in sources.items()), model)
    return True


def write_notes_table(corpus: Path, path: Path) -> int:
    docs = read_corpus(corpus, "all")
    table = pa.table({"record_id": [d.doc_id for d in docs], "text": [d.text for d in docs]})
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path / "part-00000.parquet")
    return len(docs)


@click.command("demo")
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("out/demo"),
    show_default=True,
    help="Folder for the notes table and the warehouse.",
)
@click.option(
    "--model", type=click.Path(path_type=Path), help="Artifact to use (default: the newest in --models-dir)."
)
@click.option(
    "--models-dir",
    type=click.Path(path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Where trained models are found, and the quick model is trained when there is none.",
)
def demo(corpus: Path | None, out: Path, model: Path | None, models_dir: Path) -> None:
    """The main job end to end on local Spark: notes table, spark-submit extraction, a SQL answer."""
    corpus = corpus_path(corpus)
    notes = out / "notes"
    warehouse = out / "warehouse"
    # The notes first: a missing corpus fails in a second, before any training.
    n = write_notes_table(corpus, notes)
    log.info("notes table: %d records at %s", n, notes)
    attached = False
    if model is None:
        model = ensure_model(models_dir, corpus)
        attached = ensure_heads(model, models_dir, corpus)

    from medner_udf.cli.jobs import script
    from medner_udf.extraction.session import spark_submit_command, submit_environment

    job = script("extract")
    cmd = spark_submit_command(
        job,
        [
            "--input",
            str(notes),
            "--output",
            str(warehouse),
            "--model",
            str(model),
            "--output-format",
            "delta",
            *(["--full"] if attached else []),
        ],
        master="local[2]",
        conf={"spark.driver.memory": "2g", "spark.log.level": "WARN"},
    )
    env = submit_environment()
    log.info("running: spark-submit %s ... (model %s)", job, model)
    returncode = subprocess.run(cmd, check=False, env=env).returncode
    if returncode != 0:
        raise JobFailedError(returncode)

    from medner_udf.extraction.session import build_session
    from medner_udf.extraction.sql import run_sql

    quiet = {"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}
    spark = build_session(quiet, app_name="medner-demo-sql", master="local[2]")
    try:
        print("\nSQL> " + " ".join(SAMPLE_QUERY.split()))
        run_sql(spark, warehouse, SAMPLE_QUERY).show(truncate=False)
        for query in CLINICAL_QUERIES:
            print("SQL> " + " ".join(query.split()))
            run_sql(spark, warehouse, query).show(truncate=False)
        run_sql(
            spark, warehouse, "SELECT status, count(*) AS records FROM record_status GROUP BY status"
        ).show()
    finally:
        spark.stop()
    print(f"tables: {warehouse}/entities, {warehouse}/relations and {warehouse}/record_status (Delta)")

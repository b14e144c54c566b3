"""The ``medner`` command line: the same functions the spark-submit jobs call.

medner corpus-stats            counts and the entity-type histogram of the corpus
medner train                   fit a tagger, write a versioned artifact
medner evaluate --model PATH   score an artifact on a split against the gold .ann spans
medner extract / medner sql    the extraction job and SQL over its tables (cli/extract.py)
medner demo                    corpus -> notes table -> spark-submit extraction -> SQL (cli/demo.py)
medner baseline feature-crf    the feature-CRF peer, trained and scored (cli/baseline.py)
medner doctor                  check Java, Spark, torch, the corpus, a model and storage (cli/doctor.py)

Expected failures (a missing corpus, a bad setting, a path that is not an artifact, a commit
conflict) print one or two lines and exit 2 (usage) or 1 (run time); a traceback means a bug, or
``--debug`` / ``MEDNER_DEBUG=1`` (cli/reporting.py). ``--quiet`` silences every progress bar and
progress line of every command (``MEDNER_QUIET=1`` does the same, spark-submit children included).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from medner_udf.cli.baseline import baseline as baseline_group
from medner_udf.cli.clinical import attach as attach_cmd
from medner_udf.cli.demo import demo as demo_cmd
from medner_udf.cli.doctor import doctor as doctor_cmd
from medner_udf.cli.extract import extract as extract_cmd
from medner_udf.cli.extract import sql as sql_cmd
from medner_udf.cli.maintain import maintain as maintain_cmd
from medner_udf.cli.reporting import MednerGroup
from medner_udf.config import parse_overrides
from medner_udf.corpus.maccrobat import corpus_path
from medner_udf.progress import silence_progress


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group(cls=MednerGroup)
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--debug", is_flag=True, help="Tracebacks for expected failures too (or MEDNER_DEBUG=1).")
@click.option(
    "--quiet", "quiet_all", is_flag=True, help="No progress bars or progress lines, in any command."
)
def main(verbose: bool, debug: bool, quiet_all: bool) -> None:
    """medner: clinical named-entity recognition for EHR warehouses."""
    _setup_logging(verbose or debug)
    if quiet_all:
        silence_progress()


@main.command("corpus-stats")
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
@click.option("--split", type=click.Choice(["all", "train", "dev", "test"]), default="all", show_default=True)
@click.option(
    "--plot", type=click.Path(path_type=Path), default=Path("out/entity_types.png"), show_default=True
)
def corpus_stats_cmd(corpus: Path | None, split: str, plot: Path) -> None:
    """Print corpus counts, the flattening loss, and draw the entity-type histogram."""
    from medner_udf.corpus.dataset import to_sentences
    from medner_udf.corpus.maccrobat import corpus_stats, read_corpus
    from medner_udf.evaluation.plots import plot_type_histogram

    docs = read_corpus(corpus_path(corpus), split)
    stats = corpus_stats(docs)
    _, flat = to_sentences(docs)
    click.echo(f"documents      {stats.n_documents:>8,}")
    click.echo(f"characters     {stats.n_characters:>8,}")
    click.echo(f"tokens         {stats.n_tokens:>8,}")
    click.echo(f"lines          {stats.n_lines:>8,}")
    click.echo(f"mentions (T)   {stats.n_mentions:>8,}  in {len(stats.type_counts)} types")
    click.echo(f"discontinuous  {stats.n_discontinuous:>8,}")
    click.echo(
        f"flattening drops {flat.n_dropped:,} mentions ({100 * flat.dropped_fraction:.1f}%) "
        f"in {flat.n_docs_affected} documents (longest-first policy)"
    )
    click.echo(
        "other annotation lines: " + ", ".join(f"{k} {v:,}" for k, v in sorted(stats.other_lines.items()))
    )
    click.echo("")
    for label, count in stats.type_counts.most_common():
        click.echo(f"  {label:<24} {count:>6,}")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_type_histogram(stats.type_counts, plot, title=f"MACCROBAT2020 entity types ({split})")
    click.echo(f"\nhistogram written to {plot}")


@main.command("train")
@click.option(
    "--model",
    "model_kind",
    metavar="KIND",
    default=None,
    help="Model kind to train: bilstm-cnn-crf (default) or transformer.",
)
@click.option("--config", type=click.Path(path_type=Path), help="Settings file [default: conf/train.toml].")
@click.option("--profile", help="Profile (table) of the settings file [default: the model kind].")
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
@click.option(
    "--output-dir", type=click.Path(path_type=Path), help="Where artifacts go (<dir>/<name>/<version>)."
)
@click.option("--seed", type=int)
@click.option("--encoder", type=click.Path(path_type=Path), help="Transformer: local checkpoint folder.")
@click.option(
    "--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override any setting (optim.epochs=5)."
)
@click.option("--quiet", is_flag=True, help="No progress bars or progress lines.")
def train_cmd(
    model_kind: str | None,
    config: Path | None,
    profile: str | None,
    corpus: Path | None,
    output_dir: Path | None,
    seed: int | None,
    encoder: Path | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """Train a tagger on MACCROBAT and write a versioned artifact with metrics and a model card."""
    result = run_train(model_kind, config, profile, corpus, output_dir, seed, encoder, overrides, not quiet)
    click.echo(json.dumps(result, indent=2))


def run_train(
    model_kind: str | None = None,
    config: Path | None = None,
    profile: str | None = None,
    corpus: Path | None = None,
    output_dir: Path | None = None,
    seed: int | None = None,
    encoder: Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    show_progress: bool = True,
) -> dict[str, Any]:
    """Shared by ``medner train`` and ``jobs/train.py``; returns a JSON-ready summary."""
    from medner_udf.training.base import load_train_settings
    from medner_udf.training.loop import train

    values: dict[str, Any] = parse_overrides(list(overrides))
    for key, value in (
        ("data.corpus", corpus),
        ("run.output_dir", output_dir),
        ("run.seed", seed),
        ("inputs.encoder", encoder),
    ):
        if value is not None:
            values[key] = str(value) if isinstance(value, Path) else value
    if not show_progress:
        values["run.progress"] = False
    kind = model_kind if model_kind is not None or profile is not None else "bilstm-cnn-crf"
    settings = load_train_settings(kind, config, profile, values)
    result = train(settings)
    metrics = result.metrics
    summary: dict[str, Any] = {
        "artifact": str(result.artifact_dir),
        "best_epoch": metrics.get("best_epoch"),
        "train_minutes": metrics.get("train_minutes"),
        "dev_strict_f1": metrics.get("dev", {}).get("strict", {}).get("f1"),
    }
    if "test" in metrics:
        summary["test_strict_f1"] = metrics["test"].get("strict", {}).get("f1")
    return summary


@main.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(path_type=Path), help="Artifact folder.")
@click.option(
    "--split", type=click.Choice(["train", "dev", "test", "all"]), default="test", show_default=True
)
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), help="Report folder (default: <model>/eval-<split>)."
)
@click.option("--batch-size", type=int)
@click.option("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available).")
def evaluate_cmd(
    model_dir: Path,
    split: str,
    corpus: Path | None,
    out_dir: Path | None,
    batch_size: int | None,
    device: str | None,
) -> None:
    """Score an artifact against the gold .ann spans: strict/relaxed/macro/per-type, seqeval, confusion;
    and its attached assertion and relation heads, if any (medner attach)."""
    from medner_udf.clinical.base import load_heads
    from medner_udf.corpus.maccrobat import read_corpus
    from medner_udf.evaluation.report import CLINICAL_FILE, evaluate_tagger
    from medner_udf.taggers.base import load_tagger

    tagger = load_tagger(model_dir, device=device)
    heads = load_heads(model_dir, tagger.entity_types)
    docs = read_corpus(corpus_path(corpus), split)
    out = out_dir or model_dir / f"eval-{split}"
    report = evaluate_tagger(tagger, docs, out, batch_size=batch_size, split=split, heads=heads)
    click.echo((out / "per_type.txt").read_text(encoding="utf-8") if (out / "per_type.txt").exists() else "")
    if not heads.empty:
        click.echo((out / CLINICAL_FILE).read_text(encoding="utf-8"))
    click.echo(json.dumps({k: report[k] for k in ("strict", "relaxed", "macro_f1") if k in report}, indent=2))
    click.echo(f"report written to {out}")


@main.command("ensemble")
@click.option(
    "--member", "members", multiple=True, required=True, type=click.Path(path_type=Path),
    help="A trained CRF tagger artifact (give two or more).",
)  # fmt: skip
@click.option("--name", required=True, help="Name of the ensemble artifact.")
@click.option("--version", default=None, help="Version (default: UTC time).")
@click.option("--weights", default=None, help="Comma-separated member weights (default: chosen on dev).")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("models"), show_default=True)
@click.option("--corpus", type=click.Path(path_type=Path), help="MACCROBAT2020 folder.")
def ensemble_cmd(
    members: tuple[Path, ...],
    name: str,
    version: str | None,
    weights: str | None,
    output_dir: Path,
    corpus: Path | None,
) -> None:
    """Combine trained taggers into one ensemble artifact: their CRF potentials summed with weights
    chosen on dev (or given), test scored once."""
    from medner_udf.training.ensemble import build_ensemble

    if len(members) < 2:
        raise click.UsageError("give two or more --member artifacts")
    try:
        chosen = [float(w) for w in weights.split(",")] if weights else None
    except ValueError as exc:
        raise click.UsageError(f"--weights must be comma-separated numbers, got {weights!r}") from exc
    if chosen is not None and len(chosen) != len(members):
        raise click.UsageError(f"--weights has {len(chosen)} values for {len(members)} members")
    result = build_ensemble(
        members, name=name, version=version, weights=chosen, output_dir=output_dir, corpus=corpus
    )
    m = result.metrics
    summary = {
        "artifact": str(result.artifact_dir),
        "weights": m["weights"],
        "dev_strict_f1": m["dev"]["strict"]["f1"],
    }
    if "test" in m:
        summary["test_strict_f1"] = m["test"]["strict"]["f1"]
    click.echo(json.dumps(summary, indent=2))


main.add_command(attach_cmd)
main.add_command(extract_cmd)
main.add_command(sql_cmd)
main.add_command(maintain_cmd)
main.add_command(demo_cmd)
main.add_command(baseline_group)
main.add_command(doctor_cmd)

if __name__ == "__main__":
    main()

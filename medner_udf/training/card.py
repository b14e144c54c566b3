"""The model card: one human-readable page per artifact, the same sections for every model kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(scores: dict[str, Any] | None, key: str) -> str:
    if not scores:
        return "n/a"
    return f"{scores[key]['f1']:.4f} (P {scores[key]['precision']:.4f}, R {scores[key]['recall']:.4f})"


def model_card(metrics: dict[str, Any], architecture: Sequence[str]) -> str:
    """What the model is, what it was trained on and how, and how it scores (from ``metrics``);
    ``architecture`` holds the kind's own lines (network, encoder or word vectors)."""
    s = metrics["settings"]
    run, data, optim = s["run"], s["data"], s["optim"]
    d = metrics["data"]
    dev, test = metrics.get("dev"), metrics.get("test")
    flat = d.get("flattening")
    schedule = optim["schedule"]
    if schedule == "linear":
        schedule += f", warm-up {optim['warmup_fraction']}"
    lines = [
        f"# {metrics['model']['name']} {metrics['model']['version']}",
        "",
        f"Kind: {metrics['model']['kind']}.",
        *(f"- {line}" for line in architecture),
        "",
        "## Data",
        f"- {d['corpus']} (CC BY 4.0, Caufield et al. 2019), {d['split']}: {d['train_docs']} train documents "
        f"({d['train_examples']} training examples"
        + (f", {d['train_tokens']} tokens" if "train_tokens" in d else "")
        + f"), {d['dev_docs']} dev documents.",
    ]
    if flat:
        lines.append(
            f"- Overlapping gold mentions flattened for training with the `{data['overlap_policy']}` policy "
            "(longest: longest mention first; most: as many mentions as possible): "
            f"{flat['n_dropped']} of {flat['n_mentions']} dropped. Scores below count all gold mentions."
        )
    lines += [
        "",
        "## Training",
        f"- {optim['optimizer']} lr {optim['learning_rate']}"
        + (f" (head {optim['head_learning_rate']})" if optim.get("head_learning_rate") else "")
        + f", schedule {schedule}, batch {optim['batch_size']}, weight decay {optim['weight_decay']}, "
        f"gradient clip {optim['grad_clip']}"
        + (f", weight averaging {optim['ema_decay']}" if optim["ema_decay"] else "")
        + f"; seed {run['seed']}.",
        f"- Best dev epoch {metrics['best_epoch']} of {len(metrics['history'])} (up to {optim['epochs']}); "
        f"stopped: {metrics['stop_reason']}; {metrics['train_minutes']} minutes on {metrics['device']}"
        + (" (bf16 autocast)" if metrics.get("bf16_autocast") else "")
        + ".",
    ]
    return "\n".join(lines + scores_and_limits(dev, test, chosen="the epoch")) + "\n"


def scores_and_limits(dev: dict[str, Any] | None, test: dict[str, Any] | None, chosen: str) -> list[str]:
    """The card's closing sections, the same for every kind of artifact."""
    lines = [
        "",
        f"## Scores (entity level, exact begin/end/label; dev chose {chosen}, test was not used to choose)",
        f"- dev strict micro F1: {_fmt(dev, 'strict')}; relaxed F1: {_fmt(dev, 'relaxed')}",
        f"- test strict micro F1: {_fmt(test, 'strict')}; relaxed F1: {_fmt(test, 'relaxed')}",
    ]
    if test:
        lines.append(f"- test macro F1: {test['macro_f1']:.4f}")
    return [
        *lines,
        "",
        "## Intended use and limits",
        "Research and warehouse analytics on clinical case-report-like text. Not a medical device; "
        "errors are expected (per-type scores are in metrics.json). Flat tags: about 2% of the nested "
        "gold mentions cannot be represented. Trained on 160 case reports, so expect lower accuracy on "
        "other note types.",
    ]

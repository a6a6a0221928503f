"""What a reviewer reads in the MLflow UI: the version description and the model card."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Champion:
    version: str
    metric: float | None
    data_hash: str | None


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def comparison(metric_name: str, value: float, champion: Champion | None, data_hash: str) -> str:
    if champion is None:
        return "No champion yet: this would be the first."
    if champion.data_hash and champion.data_hash != data_hash:
        return (
            f"Champion v{champion.version} was evaluated on other data ({champion.data_hash[:12]}); "
            f"{metric_name} is not comparable."
        )
    if champion.metric is None:
        return f"Champion v{champion.version} has no {metric_name} recorded."
    delta = value - champion.metric
    word = "better than" if delta > 0 else "worse than" if delta < 0 else "equal to"
    return (
        f"{metric_name} {_pct(value)} vs champion v{champion.version} {_pct(champion.metric)}: "
        f"{100 * delta:+.2f} points ({word})."
    )


def pretraining_words(uses_labels: bool, labels_used: object) -> str:
    if uses_labels:
        return (
            f"pretrained WITH labels (the {labels_used} labelled training images also train a "
            "classifier term in the autoencoder's loss)"
        )
    return "pretrained without labels"


def description(
    summary: dict[str, Any],
    evaluation: dict[str, Any],
    champion: Champion | None,
    promotion_metric: str,
    selection: str = "",
) -> str:
    lines = [
        f"**{summary['variant']} autoencoder + {summary['head']} head** on `{summary['dataset']}` "
        f"(data `{summary['data_hash'][:12]}`, {summary['labels_used']} labels; encoder "
        f"{pretraining_words(bool(summary.get('pretrain_uses_labels')), summary['labels_used'])}).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| test accuracy | {_pct(evaluation['test_accuracy'])} |",
        f"| test macro-F1 | {_pct(evaluation['test_macro_f1'])} |",
        f"| validation accuracy (selection) | {_pct(evaluation['val_accuracy'])} |",
        f"| reconstruction MSE | {evaluation['test_recon_mse']:.5f} |",
        "",
        comparison(promotion_metric, float(evaluation[promotion_metric]), champion, summary["data_hash"]),
        "",
    ]
    if selection:
        lines += [f"Selected among the experiment's candidates: {selection}.", ""]
    lines += [
        "Review pack: artifacts `review/` of the source run (model card, confusion matrix, reconstructions, "
        "latent projection, misclassified examples, training curves, per-image test predictions). "
        "`aepipe promote` runs the gate (margin + paired McNemar test against the champion) and "
        "records its numbers on this version.",
    ]
    return "\n".join(lines)


def model_card(
    summary: dict[str, Any],
    meta: dict[str, Any],
    params_flat: dict[str, Any],
    evaluation: dict[str, Any],
    training: dict[str, Any],
    pretraining: dict[str, Any],
    label_efficiency: list[dict[str, Any]],
) -> str:
    per_class = evaluation.get("per_class_accuracy", {})
    rows = "\n".join(f"| {name} | {_pct(acc)} |" for name, acc in per_class.items())
    eff = (
        "\n".join(
            f"| {r['labels_used']} | {_pct(r.get('val_accuracy'))} | {_pct(r.get('test_accuracy'))} | "
            f"`{r['run_id'][:8]}` |"
            for r in label_efficiency
        )
        or "| (no other runs on this data yet) | | | |"
    )
    # params_flat holds the effective params: only the chosen variant's and head's options
    keys = ("model.", "pretrain.", "classifier.", "seed")
    hparams = "\n".join(f"| `{k}` | `{v}` |" for k, v in params_flat.items() if k.startswith(keys))
    uses_labels = bool(summary.get("pretrain_uses_labels"))
    if uses_labels:
        encoder_line = (
            f"Encoder: **{summary['variant']}** autoencoder, pretrained on the training split WITH labels: "
            f"the {summary['labels_used']} labelled images of `classifier.labels_per_class` also train a "
            "classifier term in its loss (every other training image is used without its label)."
        )
    else:
        encoder_line = (
            f"Encoder: **{summary['variant']}** autoencoder, pretrained without labels on the training split."
        )
    counts = meta.get("counts", {})
    source = (
        f"`{meta['source']}` (source hash `{meta['source_hash'][:16]}`), "
        f"prepared data hash `{meta['data_hash'][:16]}`"
    )
    splits = (
        f"train {counts.get('train')}, validation {counts.get('val')}, test {counts.get('test')} "
        f"(test split: {meta.get('test_split', 'n/a')})"
    )
    labels_seen = summary["labels_used"] if uses_labels else 0
    epochs = f"{pretraining.get('epochs', '?')} epochs in {pretraining.get('seconds', '?')} s"
    n_test = evaluation.get("n_test", "?")
    return f"""# Model card: {summary["name"]}

## Model
{encoder_line}
Classifier: **{summary["head"]}** head on the encoder's features. Served as one MLflow pyfunc model:
input uint8 images N×{"×".join(str(s) for s in meta["shape"])} (0-255), output class, class index and
per-class probabilities.

## Data
- Source: {source}
- Classes ({len(meta["classes"])}): {", ".join(map(str, meta["classes"][:50]))}
- Splits: {splits}
- Labels used to train the head: {summary["labels_used"]}; labels seen in pretraining: {labels_seen}

## Training
| param | value |
| --- | --- |
{hparams}

Pretraining: final train loss {pretraining.get("final_train_loss", float("nan")):.5f}, validation loss
{pretraining.get("final_val_loss", float("nan")):.5f}, {epochs}.
Head selection (validation split only): validation accuracy {_pct(training.get("val_accuracy"))}.

## Metrics (test split, touched only by `evaluate`)
- accuracy {_pct(evaluation["test_accuracy"])}, macro-F1 {_pct(evaluation["test_macro_f1"])}
- reconstruction MSE (pixels in [0, 1]) {evaluation["test_recon_mse"]:.5f}

| class | accuracy |
| --- | --- |
{rows}

## Label efficiency (runs of this experiment on the same data and variant)
| labels used | validation acc. | test acc. | run |
| --- | --- | --- | --- |
{eff}

## Intended use
Classifying images like those of the source dataset (same size, channels and classes), e.g. as a
baseline or a component reviewed by a person. Promotion to `champion` is gated on the held-out
test metric: a margin over the champion and a paired exact McNemar test on the same test images.

## Limitations
- Trained and evaluated on one dataset; accuracy on other image distributions is unknown.
- Inputs are resized by `aepipe predict` but not otherwise normalised beyond the training statistics.
- Per-class accuracy comes from {n_test} test images; small classes have wide error bars.
"""

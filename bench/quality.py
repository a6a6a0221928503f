"""Quality benchmark: every autoencoder variant against baselines on one image set, one table.

Every cell is a real run of the pipeline's own stage functions (prepare, pretrain, extract,
train, evaluate; NullTracker, no MLflow) with params.yaml plus the overrides given here, so the
figures are what `dvc repro` produces with those params. Rows: logistic regression on raw
pixels, PCA-50 + LR, the conv backbone trained from scratch as a CNN on the same labels, and for
every variant the pretrained encoder and its untrained control (same architecture and seed,
random weights, probed the same way). With 100 and 1000 labels both the linear probe and the
finetune head run (the control only probes: fine-tuning random weights is the CNN row). Model
selection inside a cell, between heads at a label budget, and of the best variant uses the
validation split only; every figure shown is test accuracy.

    PYTHONPATH=src:. python bench/quality.py --data ../shared/data/mnist.npz --epochs 2

A cell's result is cached under --out by a hash of its params and data, so a run that was
stopped continues where it stopped (the figures of a cell never mix two runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
LABEL_BUDGETS = {"l10": 10, "l100": 100}  # labels per class -> 100 and 1000 labels on 10 classes
LABEL_HEADS = ("linear", "finetune")  # heads tried at each label budget; validation picks one
COLUMNS = ["linear", "mlp", "finetune", "l10:linear", "l10:finetune", "l100:linear", "l100:finetune"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", required=True, help="npz with x_train, y_train, x_test, y_test (Keras layout) or x, y"
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated model.name values (default: every registered variant)",
    )
    p.add_argument("--epochs", type=int, default=None, help="pretrain.epochs (default: params.yaml)")
    p.add_argument(
        "--limit-train",
        type=int,
        default=None,
        help="keep a stratified, seeded share of this many training images",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override, e.g. model.width=16 (repeatable)",
    )
    p.add_argument(
        "--out", default=None, help="work dir with the cell cache (default: /tmp/aepipe-quality-<data hash>)"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS threads (1 is fastest on a shared 2-core machine)"
    )
    return p.parse_args(argv)


def set_key(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        if not isinstance(tree.get(part), dict):
            tree[part] = {}
        tree = tree[part]
    tree[leaf] = value


def with_overrides(params: Any, overrides: dict[str, Any]) -> Any:
    from aepipe.config import parse_params

    data = params.model_dump(mode="json")
    for key, value in overrides.items():
        set_key(data, key, value)
    return parse_params(data, "bench/quality.py overrides")


def limited_npz(src: Path, n: int, seed: int, dest: Path) -> Path:
    """A copy of ``src`` whose training pool is a stratified, seeded sample of ``n`` images."""
    import numpy as np

    from aepipe.data.splits import stratified_split

    with np.load(src, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    xk, yk = ("x_train", "y_train") if "x_train" in arrays else ("x", "y")
    y = arrays[yk]
    if n < len(y):
        _, keep = stratified_split(np.arange(len(y)), y, n / len(y), seed)
        arrays[xk], arrays[yk] = arrays[xk][keep], y[keep]
    dest.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dest, **arrays)
    return dest


class Bench:
    """Runs cells through the stage functions and caches each cell's result by its inputs."""

    def __init__(self, base: Any, out: Path, data_dir: Path) -> None:
        from aepipe.data.prepared import load_prepared

        self.base, self.out, self.data = base, out, data_dir
        ds = load_prepared(data_dir, mmap=True)
        self.data_hash = ds.meta["data_hash"]
        self.y_test = ds.split("test")[1]

    def key(self, kind: str, params: Any, upstream: str) -> str:
        blob = json.dumps([kind, params.flat(), self.data_hash, upstream], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def cached(
        self, kind: str, params: Any, fn: Callable[[Path], dict[str, Any]], upstream: str = ""
    ) -> dict[str, Any]:
        """``upstream``: the cell this one builds on (its work dir), part of the cache key."""
        key = self.key(kind, params, upstream)
        done = self.out / "cells" / f"{kind}-{key}.json"
        if done.is_file():
            return json.loads(done.read_text())
        work = self.out / "work" / f"{kind}-{key}"
        shutil.rmtree(work, ignore_errors=True)
        start = time.perf_counter()
        result = fn(work)
        result["cell_seconds"] = round(time.perf_counter() - start, 1)
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(result, indent=2))
        print(f"  {kind}: {json.dumps({k: v for k, v in result.items() if k != 'dir'})}", flush=True)
        return result

    def encoder(self, params: Any, trained: bool) -> dict[str, Any]:
        """Pretrained (pretrain stage) or untrained (same seed, weights as initialised) autoencoder
        plus its extracted features."""
        from aepipe.stages import extract, pretrain

        def run(work: Path) -> dict[str, Any]:
            if trained:
                res = pretrain.run(params, self.data, work / "ae", work / "pretrain.json", work / "plots")
                info = {"pretrain_seconds": res["seconds"], "final_val_loss": res["final_val_loss"]}
            else:
                info = {"pretrain_seconds": 0.0}
                save_untrained(params, self.data, work / "ae")
            extract.run(params, self.data, work / "ae", work / "features")
            return {**info, "dir": str(work)}

        return self.cached("pretrained" if trained else "untrained", params, run)

    def head(self, params: Any, enc: dict[str, Any], score_with_evaluate: bool) -> dict[str, Any]:
        """Train the head; test accuracy from ``evaluate`` (the pair on raw test images) or, for
        frozen heads, from the head on the extracted test features (the same forward path)."""
        from aepipe.models.heads import HEADS
        from aepipe.stages import evaluate, train

        enc_dir = Path(enc["dir"])

        def run(work: Path) -> dict[str, Any]:
            res = train.run(
                params,
                self.data,
                enc_dir / "features",
                enc_dir / "ae",
                work / "clf",
                work / "train.json",
                work / "plots",
            )
            out = {"val": res["val_accuracy"], "labels_used": res["labels_used"]}
            if not HEADS[params.classifier.head].trains_encoder:
                out["test"] = frozen_test_accuracy(work / "clf", enc_dir / "features", self.y_test)
            if score_with_evaluate:
                metrics = evaluate.run(
                    params, self.data, enc_dir / "ae", work / "clf", work / "eval.json", work / "plots"
                )
                if "test" in out and abs(out["test"] - metrics["test_accuracy"]) > 1e-3:
                    raise RuntimeError(
                        f"{work}: evaluate ({metrics['test_accuracy']}) and the features ({out['test']}) disagree"
                    )
                out |= {"test": metrics["test_accuracy"], "recon_mse": metrics["test_recon_mse"]}
            shutil.rmtree(
                work / "clf", ignore_errors=True
            )  # fine-tuned encoders add up; the figures are kept
            return out

        return self.cached(f"head-{params.classifier.head}", params, run, upstream=enc["dir"])


def save_untrained(params: Any, data_dir: Path, model_dir: Path) -> None:
    """The control: the pretrain stage's own model construction and seeding, no training step."""
    from aepipe.data.prepared import load_prepared
    from aepipe.models import build_autoencoder
    from aepipe.models.io import save_autoencoder
    from aepipe.stages.pretrain import spec_from_params
    from aepipe.training.device import seed_everything

    ds = load_prepared(data_dir, mmap=True)
    seed_everything(params.seed)
    model = build_autoencoder(
        spec_from_params(params, ds.input_shape, ds.meta["mean"], ds.meta["std"], n_classes=len(ds.classes))
    )
    save_autoencoder(model_dir, model.eval())


def frozen_test_accuracy(classifier_dir: Path, features_dir: Path, y_test: Any) -> float:
    import torch

    from aepipe.models.io import load_head
    from aepipe.stages.extract import load_features

    head, _ = load_head(classifier_dir)
    with torch.inference_mode():
        pred = head(torch.from_numpy(load_features(features_dir, "test"))).argmax(1).numpy()
    return float((pred == y_test).mean())


def pixel_features(bench: Bench, kind: str) -> dict[str, Any]:
    """Raw pixels in [0, 1], or their first 50 principal components (fit on the training split)."""
    import numpy as np

    from aepipe.data.prepared import load_prepared

    def run(work: Path) -> dict[str, Any]:
        ds = load_prepared(bench.data, mmap=True)
        flat = {
            s: ds.split(s)[0].reshape(len(ds.splits[s]), -1).astype(np.float32) / 255.0
            for s in ("train", "val", "test")
        }
        if kind == "pca50":
            from sklearn.decomposition import PCA

            pca = PCA(n_components=50, random_state=0).fit(flat["train"])
            flat = {s: pca.transform(v).astype(np.float32) for s, v in flat.items()}
        (work / "features").mkdir(parents=True)
        for split, feats in flat.items():
            np.save(work / "features" / f"{split}.npy", feats, allow_pickle=False)
        return {"dir": str(work), "pretrain_seconds": 0.0}

    return bench.cached(f"features-{kind}", bench.base, run)


def fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "—"
    return f"{100 * value:.2f}" if pct else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("AEPIPE_PROGRESS", "0")
    import torch
    import yaml

    from aepipe.config import load_params
    from aepipe.models import REGISTRY
    from aepipe.models.heads import HEADS
    from aepipe.stages import prepare

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    data = Path(args.data).resolve()
    if not data.is_file():
        sys.exit(f"--data {data}: no such file; pass an .npz (e.g. ../shared/data/mnist.npz)")
    variants = args.variants.split(",") if args.variants else list(REGISTRY)
    unknown = [v for v in variants if v not in REGISTRY]
    if unknown:
        sys.exit(f"--variants: unknown {', '.join(unknown)}; known: {', '.join(REGISTRY)}")

    overrides: dict[str, Any] = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--set {item!r}: expected KEY=VALUE, e.g. model.width=16")
        overrides[key] = yaml.safe_load(value)
    if args.epochs is not None:
        overrides["pretrain.epochs"] = args.epochs
    base = load_params(REPO / "params.yaml")
    out = Path(args.out or f"/tmp/aepipe-quality-{hashlib.sha256(data.read_bytes()).hexdigest()[:12]}")
    source = (
        limited_npz(data, args.limit_train, base.data.seed, out / "limited.npz") if args.limit_train else data
    )
    base = with_overrides(base, {**overrides, "data.source": f"npz:{source}"})

    data_dir = (
        out
        / f"prepared-{hashlib.sha256(json.dumps(base.data.model_dump(mode='json')).encode()).hexdigest()[:12]}"
    )
    if not (data_dir / "meta.json").is_file():
        prepare.run(base, data_dir)
    bench = Bench(base, out, data_dir)
    counts = json.loads((data_dir / "meta.json").read_text())["counts"]
    print(f"data {data} ({counts}); overrides {overrides or '{}'}", flush=True)

    rows: list[dict[str, Any]] = []

    def labelled(params: Any, head: str, per_class: int | None) -> Any:
        return with_overrides(params, {"classifier.head": head, "classifier.labels_per_class": per_class})

    # Baselines on pixels: the linear probe's own trainer on raw / PCA features.
    for kind, name in (("pixels", "LR on raw pixels"), ("pca50", "PCA-50 + LR")):
        print(f"{name}", flush=True)
        feats = pixel_features(bench, kind)
        row = {"name": name}
        for col, per_class in (("linear", None), *((f"{c}:linear", n) for c, n in LABEL_BUDGETS.items())):
            row[col] = bench.head(labelled(base, "linear", per_class), feats, score_with_evaluate=False)
        rows.append(row)

    # The conv backbone as a plain CNN trained from scratch: the finetune head on an untrained
    # encoder, encoder at the head's learning rate from the first epoch.
    scratch = with_overrides(
        base,
        {
            "model.name": "conv",
            "classifier.finetune.encoder_lr_ratio": 1.0,
            "classifier.finetune.head_epochs": 0,
        },
    )
    print("CNN from scratch", flush=True)
    untrained_conv = bench.encoder(scratch, trained=False)
    row = {"name": "CNN from scratch (conv backbone)"}
    for col, per_class in (("finetune", None), *((f"{c}:finetune", n) for c, n in LABEL_BUDGETS.items())):
        row[col] = bench.head(
            labelled(scratch, "finetune", per_class), untrained_conv, score_with_evaluate=True
        )
    rows.append(row)

    for variant in variants:
        params = with_overrides(base, {"model.name": variant})
        uses_labels = REGISTRY[variant].module.uses_labels
        for trained in (True, False):
            print(f"{variant} ({'pretrained' if trained else 'untrained control'})", flush=True)
            enc = bench.encoder(params, trained)
            row = {
                "name": variant if trained else f"{variant}: untrained control",
                "variant": variant if trained else None,
            }
            row["pretrain_seconds"] = enc["pretrain_seconds"]
            for head in ("linear", "mlp", "finetune") if trained else ("linear", "mlp"):
                # evaluate.run once per encoder (linear) for the reconstruction MSE, and for finetune
                row[head] = bench.head(labelled(params, head, None), enc, score_with_evaluate=head != "mlp")
            row["recon_mse"] = row["linear"].get("recon_mse")
            for col, per_class in LABEL_BUDGETS.items():
                # a variant that pretrains with labels sees only this budget's labels: pretrain again
                budget_enc = (
                    bench.encoder(labelled(params, "linear", per_class), trained)
                    if uses_labels and trained
                    else enc
                )
                # fine-tuning an untrained encoder is the CNN-from-scratch row
                for head in LABEL_HEADS if trained else ("linear",):
                    cell = labelled(params, head, per_class)
                    row[f"{col}:{head}"] = bench.head(
                        cell, budget_enc, score_with_evaluate=HEADS[head].trains_encoder
                    )
            rows.append(row)

    (out / "table.json").write_text(json.dumps(rows, indent=2, default=str))
    print_table(rows, variants, time.perf_counter() - t_start, bench)
    return 0


def by_validation(row: dict[str, Any], budget: str) -> dict[str, Any] | None:
    """The label-budget cell whose head did best on validation (ties: the first in LABEL_HEADS)."""
    cells = [row[f"{budget}:{head}"] for head in LABEL_HEADS if row.get(f"{budget}:{head}")]
    return max(cells, key=lambda c: c["val"]) if cells else None


def print_table(rows: list[dict[str, Any]], variants: list[str], seconds: float, bench: Bench) -> None:
    def test(cell: dict[str, Any] | None) -> str:
        return fmt(cell["test"] if cell else None)

    header = [
        "row",
        "linear probe",
        "MLP head",
        "fine-tune",
        "100 labels: linear",
        "100 labels: fine-tune",
        "1000 labels: linear",
        "1000 labels: fine-tune",
        "recon. MSE",
        "pretrain s",
        "val (linear)",
    ]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [row["name"], *(test(row.get(c)) for c in COLUMNS)]
        cells.append(fmt(row.get("recon_mse"), pct=False))
        cells.append(f"{row['pretrain_seconds']:.0f}" if row.get("pretrain_seconds") else "—")
        cells.append(fmt(row["linear"]["val"]) if row.get("linear") else "—")
        print("| " + " | ".join(cells) + " |")
    print(f"\ntest accuracy in %, {len(bench.y_test)} test images; total wall time {seconds / 60:.1f} min")
    pretrained = [r for r in rows if r.get("variant") in variants]
    best = max(pretrained, key=lambda r: r["linear"]["val"])  # chosen on validation, reported on test
    picks = {budget: by_validation(best, budget) for budget in LABEL_BUDGETS}
    print(
        f"RESULT best={best['variant']} linear={test(best['linear'])} finetune={test(best['finetune'])} "
        f"l10={test(picks['l10'])} l100={test(picks['l100'])}"
    )


if __name__ == "__main__":
    sys.exit(main())

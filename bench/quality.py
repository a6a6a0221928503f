"""Quality benchmark: every autoencoder variant against baselines on one image set, one table.

Every cell is a real run of the pipeline's own stage functions (prepare, pretrain, extract,
train, evaluate; NullTracker, no MLflow) with params.yaml plus the overrides given here, so the
figures are what `dvc repro` produces with those params. Rows, in three groups kept apart:
baselines that learn from the labels alone (logistic regression on raw pixels, PCA-50 + LR, the
conv backbone trained from scratch as a supervised CNN on the same labels), variants pretrained
WITHOUT labels, and variants whose pretraining uses the labelled subset (vae_joint), each variant
followed by its untrained control (same architecture and seed, random weights, given the same
heads: what pretraining adds). Columns: the linear probe, MLP and fine-tune heads on all labels;
at 100 and 1000 labels (10 / 100 per class) the linear probe, fine-tune and the semisup head
(FixMatch-style, every training image unlabelled), each the mean +- std over ``--seeds`` seeds of
the labelled subset (the seed also drives the head's initialisation and batch order). Model
selection inside a cell and the choice of the best variant use the validation split only; every
figure shown is test accuracy.

    PYTHONPATH=src:. python bench/quality.py --data ../shared/data/mnist.npz --epochs 2

A cell's result is cached under --out by a hash of its params, the prepared data's hash and the
source code it runs (src/aepipe and this file; encoder cells leave out the head-only modules,
which pretraining never imports: tests/test_bench_quality.py checks that), so a stopped run
continues where it stopped and a RESULT line never reprints cells of other code. Encoder cells
hold only the params dvc.yaml lists for prepare, pretrain and extract (tests/test_dvc_params.py
checks those lists are what the stages read), so a head-only change reuses the encoders.
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
BUDGETS = {"l10": 10, "l100": 100}  # labels per class -> 100 and 1000 labels on 10 classes
BUDGET_HEADS = ("linear", "finetune", "semisup")  # heads at each label budget; validation picks one
COLUMNS = [
    "all:linear",
    "all:mlp",
    "all:finetune",
    *(f"{b}:{h}" for b in BUDGETS for h in BUDGET_HEADS),
]
OPTIONAL_COLUMNS = ["all:semisup"]  # not run unless asked with --columns
TITLES = {"all": "all labels", "l10": "100 labels", "l100": "1000 labels"}
# Modules only the train/evaluate stages import: pretraining and extraction never do
# (tests/test_bench_quality.py checks it), so editing them keeps the encoder cells.
HEAD_ONLY = (
    "training/heads.py",
    "training/fit.py",
    "training/trainers.py",
    "training/finetune.py",
    "training/semisup.py",
    "training/augment.py",
    "stages/train.py",
    "stages/evaluate.py",
)
# The stages an encoder cell runs (pretrain and extract, on the prepared data): its key holds only
# the params dvc.yaml lists for them, which tests/test_dvc_params.py checks are every param they
# read, so a head-only change (classifier.finetune.*) reuses the pretrained encoders.
ENCODER_STAGES = ("prepare", "pretrain", "extract")


def encoder_params() -> list[str]:
    """The dvc.yaml params entries of ENCODER_STAGES (a section covers every key below it)."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return [str(entry) for stage in ENCODER_STAGES for entry in stages[stage].get("params", [])]


def keyed_params(params: Any, entries: list[str] | None) -> dict[str, Any]:
    """``params`` flattened, cut to the keys under ``entries`` (None: all of them)."""
    flat: dict[str, Any] = params.flat()
    if entries is None:
        return flat
    return {k: v for k, v in flat.items() if any(k == e or k.startswith(e + ".") for e in entries)}


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
    p.add_argument(
        "--columns",
        default=",".join(COLUMNS),
        help=f"comma-separated columns to run (default: all of {', '.join(COLUMNS)}; also "
        f"{', '.join(OPTIONAL_COLUMNS)})",
    )
    p.add_argument(
        "--seeds", type=int, default=3, help="seeds of the labelled subset per 100/1000-label cell (0..N-1)"
    )
    p.add_argument(
        "--from-seed",
        type=int,
        default=0,
        help="run seeds from this one to --seeds - 1 only: splits one long run between processes "
        "sharing --out (a run without it then prints the whole table from the cache)",
    )
    p.add_argument(
        "--control-seeds",
        type=int,
        default=None,
        help="seeds for the untrained controls' 100/1000-label cells (default: --seeds); fewer keeps "
        "a long run affordable, and the table marks those cells with their n",
    )
    p.add_argument(
        "--rows",
        default="baselines,pretrained,controls",
        help="which row kinds to run: baselines, pretrained, controls (comma-separated; two processes "
        "with disjoint rows can share one --out)",
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


def code_hash(encoder_only: bool) -> str:
    """Hash of the code a cell runs: every module of src/aepipe (less HEAD_ONLY for encoder
    cells) and the source of this file's cell-running functions (not its table printing)."""
    import inspect

    digest = hashlib.sha256()
    root = REPO / "src" / "aepipe"
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if encoder_only and rel in HEAD_ONLY:
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    for fn in (
        Bench,
        save_untrained,
        frozen_test_accuracy,
        pixel_features,
        limited_npz,
        with_overrides,
        top_confusions,
        best_curve_row,
        keyed_params,
    ):
        digest.update(inspect.getsource(fn).encode())
    return digest.hexdigest()[:16]


def with_overrides(params: Any, overrides: dict[str, Any], dotlist: list[str] | None = None) -> Any:
    """``params`` with ``--set`` items (``dotlist``) then typed dotted values, validated again."""
    from aepipe.config import apply_overrides

    return apply_overrides(params, dotlist or [], "bench/quality.py params", values=overrides, flag="--set")


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
        self.code = {part: code_hash(encoder_only=part == "encoder") for part in ("encoder", "all")}
        self.encoder_params = encoder_params()

    def key(self, kind: str, params: Any, upstream: str) -> str:
        """Params, data, the cell it builds on, and the code: encoder cells (pretrained,
        untrained, pixel features) hash the code and the params pretraining and extraction use,
        every other cell all of both."""
        encoder = kind in ("pretrained", "untrained") or kind.startswith("features-")
        code = self.code["encoder" if encoder else "all"]
        flat = keyed_params(params, self.encoder_params if encoder else None)
        blob = json.dumps([kind, flat, self.data_hash, upstream, code], sort_keys=True, default=str)
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
        start, cpu = time.perf_counter(), time.process_time()
        result = fn(work)
        result["cell_seconds"] = round(time.perf_counter() - start, 1)
        result["cell_cpu_seconds"] = round(time.process_time() - cpu, 1)  # all threads of this process
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
            if not HEADS[params.classifier.resolved_head].trains_encoder:
                out["test"] = frozen_test_accuracy(work / "clf", enc_dir / "features", self.y_test)
            if score_with_evaluate:
                metrics = evaluate.run(
                    params, self.data, enc_dir / "ae", work / "clf", work / "eval.json", work / "plots"
                )
                if "test" in out and abs(out["test"] - metrics["test_accuracy"]) > 1e-3:
                    raise RuntimeError(
                        f"{work}: evaluate ({metrics['test_accuracy']}) and the features ({out['test']}) "
                        "disagree"
                    )
                out |= {"test": metrics["test_accuracy"], "recon_mse": metrics["test_recon_mse"]}
                out["confusions"] = top_confusions(work / "plots" / "confusion.csv")
            if HEADS[params.classifier.resolved_head].trains_encoder:
                out |= {k: res[k] for k in ("best_epoch", "epochs_run", "seconds") if k in res}
                out["best_row"] = best_curve_row(work / "plots" / "train_curve.csv")
            shutil.rmtree(
                work / "clf", ignore_errors=True
            )  # fine-tuned encoders add up; the figures are kept
            return out

        return self.cached(f"head-{params.classifier.resolved_head}", params, run, upstream=enc["dir"])


def top_confusions(confusion_csv: Path, n: int = 6) -> list[list[Any]]:
    """The ``n`` most frequent (true, predicted, count) mistakes on the test split."""
    import csv
    from collections import Counter

    with open(confusion_csv) as fh:
        pairs = Counter(
            (r["actual"], r["predicted"]) for r in csv.DictReader(fh) if r["actual"] != r["predicted"]
        )
    return [[a, p, c] for (a, p), c in pairs.most_common(n)]


def best_curve_row(curve_csv: Path) -> dict[str, float]:
    """The training curve's row of the epoch early stopping kept (pseudo-label statistics)."""
    import csv

    with open(curve_csv) as fh:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(fh)]
    return max(rows, key=lambda r: r["val_accuracy"]) if rows else {}


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


def mean_std(cells: list[dict[str, Any]], key: str = "test") -> tuple[float, float]:
    import statistics

    values = [c[key] for c in cells]
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt_cell(cell: Any, seeds: int) -> str:
    """One figure, or mean ± std over the seeds run (with n when fewer than asked)."""
    if cell is None:
        return "—"
    if isinstance(cell, dict):
        return fmt(cell["test"])
    mean, std = mean_std(cell)
    text = f"{100 * mean:.2f} ± {100 * std:.2f}" if len(cell) > 1 else f"{100 * mean:.2f}"
    return text + (f" (n={len(cell)})" if len(cell) < seeds else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("AEPIPE_PROGRESS", "0")
    import torch

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
    columns = [c for c in args.columns.split(",") if c]
    bad = [c for c in columns if c not in COLUMNS + OPTIONAL_COLUMNS]
    if bad:
        sys.exit(f"--columns: unknown {', '.join(bad)}; known: {', '.join(COLUMNS + OPTIONAL_COLUMNS)}")
    if args.seeds < 1:
        sys.exit("--seeds must be >= 1")
    if args.control_seeds is not None and not 1 <= args.control_seeds <= args.seeds:
        sys.exit(f"--control-seeds must be between 1 and --seeds ({args.seeds})")
    if not 0 <= args.from_seed < args.seeds:
        sys.exit(f"--from-seed must be between 0 and --seeds - 1 ({args.seeds - 1})")
    kinds = set(args.rows.split(","))
    if not kinds or kinds - {"baselines", "pretrained", "controls"}:
        sys.exit(f"--rows {args.rows!r}: a comma-separated subset of baselines, pretrained, controls")

    overrides: dict[str, Any] = {}
    if args.epochs is not None:
        overrides["pretrain.epochs"] = args.epochs
    base = load_params(REPO / "params.yaml")
    out = Path(args.out or f"/tmp/aepipe-quality-{hashlib.sha256(data.read_bytes()).hexdigest()[:12]}")
    source = (
        limited_npz(data, args.limit_train, base.data.seed, out / "limited.npz") if args.limit_train else data
    )
    base = with_overrides(base, {**overrides, "data.source": f"npz:{source}"}, args.set)

    data_key = hashlib.sha256(json.dumps(base.data.model_dump(mode="json")).encode()).hexdigest()[:12]
    data_dir = out / f"prepared-{data_key}"
    if not (data_dir / "meta.json").is_file():
        prepare.run(base, data_dir)
    bench = Bench(base, out, data_dir)
    counts = json.loads((data_dir / "meta.json").read_text())["counts"]
    print(
        f"data {data} ({counts}); overrides {[*args.set, *overrides] or '[]'}; columns {','.join(columns)}",
        flush=True,
    )
    seeds = list(range(args.from_seed, args.seeds))

    def cell_params(params: Any, column: str, seed: int | None = None) -> Any:
        budget, _, head = column.partition(":")
        over = {"classifier.head": head, "classifier.labels_per_class": BUDGETS.get(budget)}
        return with_overrides(params, over | ({"seed": seed} if seed is not None else {}))

    def encoder_of(cell: Any, trained: bool, sees_labels: bool) -> dict[str, Any]:
        """The encoder a cell's head starts from. Only a variant that pretrains with labels
        (trained) depends on the cell's labelled subset and seed; every other encoder is the
        base seed's, shared by all heads, budgets and seeds."""
        keep = {"classifier.head": base.classifier.head}
        if not sees_labels:
            keep |= {"seed": base.seed, "classifier.labels_per_class": base.classifier.labels_per_class}
        return bench.encoder(with_overrides(cell, keep), trained)

    def run_column(
        params: Any,
        column: str,
        encoder_for: Callable[[Any], dict[str, Any]],
        column_of_pixels: bool = False,
        n_seeds: int = args.seeds,
    ) -> Any:
        """All labels: one cell. A label budget: one cell per seed of the labelled subset."""
        head = column.partition(":")[2]
        evaluate_it = HEADS[head].trains_encoder
        if column.startswith("all:"):
            cell = cell_params(params, column)
            # evaluate also scores the probe of an encoder (for the reconstruction MSE); pixels have none
            probe_of_encoder = head == "linear" and not column_of_pixels
            return bench.head(cell, encoder_for(cell), score_with_evaluate=evaluate_it or probe_of_encoder)
        cells = []
        for seed in (s for s in seeds if s < n_seeds):
            cell = cell_params(params, column, seed)
            cells.append(bench.head(cell, encoder_for(cell), score_with_evaluate=evaluate_it))
        return cells

    rows: list[dict[str, Any]] = []
    if "baselines" in kinds:
        # Baselines on pixels: the linear probe's own trainer on raw / PCA features.
        for kind, name in (("pixels", "LR on raw pixels"), ("pca50", "PCA-50 + LR")):
            print(name, flush=True)
            feats = pixel_features(bench, kind)
            row = {"name": name, "group": "baselines"}
            for col in (c for c in columns if c.endswith(":linear")):
                row[col] = run_column(base, col, lambda _p, f=feats: f, column_of_pixels=True)
            rows.append(row)
        # A supervised CNN on the same labels: the conv backbone from scratch (the finetune head on
        # an untrained encoder, encoder at the head's learning rate from the first epoch).
        scratch = with_overrides(
            base,
            {
                "model.name": "conv",
                "classifier.finetune.encoder_lr_ratio": 1.0,
                "classifier.finetune.head_epochs": 0,
            },
        )
        print("supervised CNN", flush=True)
        row = {"name": "supervised CNN (conv backbone from scratch)", "group": "baselines"}
        for col in (c for c in columns if c.endswith(":finetune")):
            row[col] = run_column(scratch, col, lambda p: encoder_of(p, trained=False, sees_labels=False))
        rows.append(row)

    for variant in variants:
        params = with_overrides(base, {"model.name": variant})
        uses_labels = REGISTRY[variant].module.uses_labels
        group = "label-using pretraining" if uses_labels else "label-free pretraining"
        for trained in [t for t, kind in ((True, "pretrained"), (False, "controls")) if kind in kinds]:
            print(f"{variant} ({'pretrained' if trained else 'untrained control'})", flush=True)
            row = {
                "name": variant if trained else f"{variant}: untrained control",
                "group": group,
                "variant": variant,
                "trained": trained,
            }

            def encoder_for(
                cell: Any, trained: bool = trained, labels: bool = uses_labels, row: dict[str, Any] = row
            ) -> dict[str, Any]:
                enc = encoder_of(cell, trained, labels and trained)
                if trained:
                    # the row's "pretrain s": its first encoder's (a label-free row has one; a
                    # label-using row one per labelled subset, all of one length), never an extra
                    # pretraining on all labels only for this figure
                    row.setdefault("pretrain_seconds", enc["pretrain_seconds"])
                return enc

            for col in columns:
                if not trained and col.endswith(":finetune"):
                    continue  # fine-tuning random weights is the supervised CNN row
                n_seeds = args.seeds if trained else (args.control_seeds or args.seeds)
                row[col] = run_column(params, col, encoder_for, n_seeds=n_seeds)
            if isinstance(row.get("all:linear"), dict):
                row["recon_mse"] = row["all:linear"].get("recon_mse")
            rows.append(row)

    (out / "table.json").write_text(json.dumps(rows, indent=2, default=str))
    print_table(rows, columns, args.seeds, time.perf_counter() - t_start, bench, args.from_seed)
    return 0


def by_validation(row: dict[str, Any], budget: str) -> Any:
    """The budget's cell (list over seeds) whose head did best on validation, mean over seeds."""
    cells = [row[f"{budget}:{head}"] for head in BUDGET_HEADS if row.get(f"{budget}:{head}")]
    return max(cells, key=lambda c: mean_std(c, "val")[0]) if cells else None


def print_table(
    rows: list[dict[str, Any]],
    columns: list[str],
    seeds: int,
    seconds: float,
    bench: Bench,
    first_seed: int = 0,
) -> None:
    header = ["row", *(f"{TITLES[c.split(':')[0]]}: {c.split(':')[1]}" for c in columns)]
    header += ["recon. MSE", "pretrain s", "val (linear)"]
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    group = None
    for row in rows:
        if row["group"] != group:
            group = row["group"]
            print("| " + " | ".join([f"**{group}**", *[""] * (len(header) - 1)]) + " |")
        cells = [row["name"], *(fmt_cell(row.get(c), seeds) for c in columns)]
        cells.append(fmt(row.get("recon_mse"), pct=False))
        cells.append(f"{row['pretrain_seconds']:.0f}" if row.get("pretrain_seconds") else "—")
        cells.append(fmt(row["all:linear"]["val"]) if isinstance(row.get("all:linear"), dict) else "—")
        print("| " + " | ".join(cells) + " |")
    print(
        f"\ntest accuracy in %, {len(bench.y_test)} test images; 100/1000-label cells: mean ± std over "
        f"{seeds} seed(s) of the labelled subset; total wall time {seconds / 60:.1f} min"
    )
    for row in rows:  # what the semi-supervised cells cost, and what their errors look like
        for col in columns:
            cells = row.get(col)
            if not col.endswith(":semisup") or not cells:
                continue
            # a run with --from-seed holds the cells of seeds first_seed.. only
            for i, cell in enumerate(cells if isinstance(cells, list) else [cells], start=first_seed):
                b = cell.get("best_row", {})
                print(
                    f"  {row['name']} / {TITLES[col.split(':')[0]]} semisup, seed {i}: test "
                    f"{fmt(cell['test'])}, {cell['cell_seconds']:.0f} s wall, "
                    f"{cell.get('cell_cpu_seconds', float('nan')):.0f} s CPU, best epoch "
                    f"{cell.get('best_epoch')}/{cell.get('epochs_run')}, pseudo-labels at best: mask "
                    f"{b.get('mask_rate', float('nan')):.3f}, right "
                    f"{b.get('pseudo_label_accuracy', float('nan')):.4f}, wrong ones' confidence "
                    f"{b.get('wrong_pseudo_label_confidence', float('nan')):.3f}; top confusions (true, "
                    f"predicted, n) {cell.get('confusions')}"
                )
    below = [
        f"{row['name']} {col}"
        for row in rows
        if row.get("trained")
        for col in columns
        for ctrl in rows
        if ctrl.get("variant") == row["variant"]
        and ctrl.get("trained") is False
        and ctrl.get(col)
        and row.get(col)
        if mean_std(as_list(row[col]))[0] <= mean_std(as_list(ctrl[col]))[0]
    ]
    print(f"cells not above their untrained control: {', '.join(below) if below else 'none'}")
    parts = []
    for group, tag in (("label-free pretraining", "free"), ("label-using pretraining", "using")):
        trained = [r for r in rows if r["group"] == group and r.get("trained")]
        if not trained:
            continue
        with_probe = [r for r in trained if isinstance(r.get("all:linear"), dict)]
        best = max(with_probe, key=lambda r: r["all:linear"]["val"]) if with_probe else trained[0]
        parts.append(f"{tag}={best['variant']}")
        for col in ("all:linear", "all:finetune"):
            parts.append(f"{tag}_{col.split(':')[1]}={fmt_cell(best.get(col), seeds).replace(' ', '')}")
        for budget in BUDGETS:
            parts.append(f"{tag}_{budget}={fmt_cell(by_validation(best, budget), seeds).replace(' ', '')}")
    print("RESULT " + " ".join(parts))


def as_list(cell: Any) -> list[dict[str, Any]]:
    return cell if isinstance(cell, list) else [cell]


if __name__ == "__main__":
    sys.exit(main())

"""Scale benchmark: every stage that reads the images, on synthetic data of growing size.

For each size (default 0.25M, 0.5M, 1M, 2M images of 28x28) a synthetic labelled set is written
block by block into a temporary directory as an ``npy:`` source (x.npy uint8, y.npy), then a
fresh subprocess runs the pipeline's own stage functions on it, no MLflow: prepare, pretrain
(``pretrain.epochs: 1``), extract, train, evaluate. It reports the seconds of each and each
stage's own peak RSS (Linux: the process's peak is reset before each stage through
/proc/self/clear_refs; elsewhere the peaks are cumulative). A fresh process per size makes each
size's figures its own. Nothing is kept: the directory is removed after each size (--keep).

What it claims, exactly: time per image stays flat (linear time) and the peak RSS of prepare,
pretrain, extract and evaluate stays flat (out of core: prepare copies blocks, pretraining
streams shuffled blocks, extraction appends to its file, evaluate streams the test and val
splits). Not claimed: **train** holds the features of the labelled subset and of the whole
validation split in memory (N/10 x feature_dim float32: it grows with N), so it runs with
``classifier.labels_per_class: 100`` and its peak is printed apart (train_peak_rss_mb), outside
rss_ratio; **register** is not run (MLflow logging; it reads a few test rows for the model's
input example). ``pretrain.data_mode`` is forced to ``stream`` (``--set pretrain.data_mode=auto``
lets the loop decide; on a machine with enough RAM it keeps the data resident and RSS then grows
with N).

    PYTHONPATH=src:. python bench/scale.py                       # all four sizes, params.yaml's model
    PYTHONPATH=src:. python bench/scale.py --sizes 250000,2000000 --set model.width=4
    PYTHONPATH=src:. python bench/scale.py --smoke               # CI: two tiny sizes, seconds

The last line is ``RESULT sizes=... seconds=... us_per_image=... peak_rss_mb=... rss_ratio=...
train_peak_rss_mb=...`` (peak_rss_mb: the largest peak of the flat stages per size; rss_ratio:
that peak at the largest size / at the smallest).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SIZES = (250_000, 500_000, 1_000_000, 2_000_000)
SMOKE_SIZES = (2_000, 4_000)
SMOKE_SETTINGS = ["model.width=4", "pretrain.stream_buffer_mb=8", "evaluate.batch_size=256"]
CLASSES = 10
STAGES = ("prepare", "pretrain", "extract", "train", "evaluate")
FLAT = ("prepare", "pretrain", "extract", "evaluate")  # the stages whose memory must not grow with N


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma-separated image counts")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="params override, e.g. model.width=4 (repeatable)",
    )
    p.add_argument("--params", default=str(REPO / "params.yaml"), help="base params file")
    p.add_argument(
        "--workdir", default=None, help="where the temporary data goes (default: the system temp dir)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in the measured process (default: torch's own choice)",
    )
    p.add_argument("--keep", action="store_true", help="keep each size's directory")
    p.add_argument(
        "--smoke",
        action="store_true",
        help=f"CI check: sizes {','.join(map(str, SMOKE_SIZES))}, a tiny model ({' '.join(SMOKE_SETTINGS)}), "
        "1 thread",
    )
    p.add_argument(
        "--one", nargs=2, metavar=("SOURCE_DIR", "WORK_DIR"), help=argparse.SUPPRESS
    )  # internal: the measured child
    return p.parse_args(argv)


def synthesize(directory: Path, n: int, seed: int = 0, block: int = 65_536) -> None:
    """n learnable 28x28 digits-like images: class k lights a bar at its own place, plus noise."""
    from aepipe.data.blockio import NpyWriter

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    with NpyWriter(directory / "x.npy", (n, 28, 28), np.uint8) as writer:
        for lo in range(0, n, block):
            y = labels[lo : lo + block]
            x = rng.integers(0, 60, size=(len(y), 28, 28), dtype=np.uint8)
            rows = 4 + 2 * y
            for r in range(3):
                x[np.arange(len(y)), rows + r, 4:24] = 230
            writer.append(x)
    np.save(directory / "y.npy", labels)


def params_with(path: str, overrides: list[str], source: str) -> Any:
    from aepipe.config import apply_overrides, load_params

    forced = [
        f"data.source={source}",
        "pretrain.epochs=1",
        "pretrain.init_from=null",
        "pretrain.data_mode=stream",
        "classifier.head=linear",
        "classifier.labels_per_class=100",
        "device=cpu",
    ]
    return apply_overrides(load_params(path), forced + overrides, path)  # --set values come last and win


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux >= 4.0); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(source: Path, work: Path, overrides: list[str], params_path: str) -> dict[str, Any]:
    """The measured process: the stages on ``source``, the seconds and peak RSS of each."""
    from aepipe.stages import evaluate, extract, prepare, pretrain, train

    params = params_with(params_path, overrides, f"npy:{source}")
    os.environ["AEPIPE_CHECKPOINT_DIR"] = str(work / "checkpoints")
    out: dict[str, Any] = {
        "data_mode": params.pretrain.data_mode,
        "width": params.model.width,
        "model": params.model.name,
    }
    data, ae, feats, clf, plots = (work / n for n in ("prepared", "ae", "features", "clf", "plots"))
    steps = {
        "prepare": lambda: prepare.run(params, data),
        "pretrain": lambda: pretrain.run(params, data, ae, work / "pretrain.json", plots),
        "extract": lambda: extract.run(params, data, ae, feats),
        "train": lambda: train.run(params, data, feats, ae, clf, work / "train.json", plots),
        "evaluate": lambda: evaluate.run(params, data, ae, clf, work / "eval.json", plots),
    }
    out["peak_per_stage"] = True
    for name, fn in steps.items():
        out["peak_per_stage"] &= _reset_peak()
        t0 = time.perf_counter()
        fn()
        out[f"{name}_s"] = time.perf_counter() - t0
        out[f"{name}_peak_rss_mb"] = _peak_mb()
    out["test_accuracy"] = json.loads((work / "eval.json").read_text())["test_accuracy"]
    return out


def run_size(n: int, args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"aepipe-scale-{n}-", dir=args.workdir))
    try:
        (root / "source").mkdir()
        t0 = time.perf_counter()
        synthesize(root / "source", n)
        generated = time.perf_counter() - t0
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]),
            "AEPIPE_PROGRESS": "0",
        }
        if args.threads:
            env["OMP_NUM_THREADS"] = str(args.threads)
        cmd = [sys.executable, __file__, "--one", str(root / "source"), str(root), "--params", args.params]
        for item in args.set:
            cmd += ["--set", item]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"size {n} failed:\n{proc.stderr[-4000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"n": n, "generate_s": generated, **result}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path[:0] = [str(REPO / "src"), str(REPO)]
    if args.one:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        print(json.dumps(child(Path(args.one[0]), Path(args.one[1]), args.set, args.params)))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.smoke:
        sizes, args.set = list(SMOKE_SIZES), SMOKE_SETTINGS + args.set
        args.threads = args.threads or 1
    print(
        f"{'images':>9} " + " ".join(f"{s + ' s':>11}" for s in STAGES) + f" {'us/image':>9} {'peak MB':>8}"
        "  (peak RSS of prepare / pretrain / extract / train / evaluate)"
    )
    rows = []
    for n in sizes:
        r = run_size(n, args)
        total = sum(r[f"{s}_s"] for s in STAGES)
        peak = max(r[f"{s}_peak_rss_mb"] for s in FLAT)
        r |= {"total_s": total, "us_per_image": total / n * 1e6, "peak": peak}
        rows.append(r)
        print(
            f"{n:>9} "
            + " ".join(f"{r[f'{s}_s']:>11.1f}" for s in STAGES)
            + f" {r['us_per_image']:>9.1f} {peak:>8.0f}  ("
            + " / ".join(f"{r[f'{s}_peak_rss_mb']:.0f}" for s in STAGES)
            + f"; {r['model']} width {r['width']}, data_mode {r['data_mode']}, test accuracy "
            f"{r['test_accuracy']:.3f}, synthesis {r['generate_s']:.1f} "
            f"s{'' if r['peak_per_stage'] else '; peaks cumulative'})",
            flush=True,
        )
    ratio = rows[-1]["peak"] / rows[0]["peak"]
    print(
        "RESULT "
        + " ".join(
            [
                "sizes=" + ",".join(str(r["n"]) for r in rows),
                "seconds=" + ",".join(f"{r['total_s']:.1f}" for r in rows),
                "us_per_image=" + ",".join(f"{r['us_per_image']:.1f}" for r in rows),
                "peak_rss_mb=" + ",".join(f"{r['peak']:.0f}" for r in rows),
                f"rss_ratio={ratio:.2f}",
                "train_peak_rss_mb=" + ",".join(f"{r['train_peak_rss_mb']:.0f}" for r in rows),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

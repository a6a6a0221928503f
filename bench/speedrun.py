"""Time to accuracy: the whole pipeline from raw data to a scored classifier, beside the textbook approach.

What a user waits for is the time from `dvc repro` to a classifier worth promoting. This bench
runs, in one process tree and back to back on the same machine:

  project   the stages prepare -> pretrain -> extract -> train -> evaluate exactly as `dvc repro`
            runs them: each stage's `cmd` is read from dvc.yaml and run as its own process
            (`python -m aepipe.cli <stage> ...`) in a scratch directory holding the params file
            (params.yaml, or --params, plus --preset and --set overrides, data.source pointed at
            --data) and its own sqlite MLflow store, so imports, MLflow tracking and file writes
            count as they do for a user;
  textbook  the approach the project replaces, as one script in its own process: the same conv
            backbone as a plain autoencoder (pixel MSE, model.name conv, same width/depth/latent
            size), trained by a per-sample DataLoader loop (a numpy Dataset with ToTensor, shuffle,
            num_workers 0; the seed-style loop of bench/throughput.py) for the same number of
            epochs, then scikit-learn's LogisticRegression on its standardised 64-d codes, trained
            on every training image and scored on the test images.

Both score the source's own test split (MNIST: the 10,000 test images). Per stage wall seconds,
the total and the test accuracy are printed as a table; the last line is

  RESULT target=0.99 reached=<project test accuracy> seconds=<project total>
         seed_seconds=<textbook total> seed_acc=<textbook test accuracy>

(one line; wrapped here)

    PYTHONPATH=src:. python bench/speedrun.py --data ../shared/data/mnist.npz --preset params-fast.yaml
    PYTHONPATH=src:. python bench/speedrun.py --data ../shared/data/mnist.npz --device cuda  # GPU machine
    PYTHONPATH=src:. python bench/speedrun.py --data tiny.npz --smoke  # seconds: CI proves it runs

--profile adds a torch.profiler table of a few pretraining steps (the project's loop, in this
process, on the chosen device): where the time goes when a target is missed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
STAGES = ("prepare", "pretrain", "extract", "train", "evaluate")  # dvc.yaml's, up to the scored model
SEED_PARTS = ("load", "train AE", "codes", "fit LR", "score")  # the textbook script's steps, same order
SMOKE = {  # tiny data and one epoch: seconds, so CI proves the whole bench runs
    "limit": 600,
    "sets": ["pretrain.epochs=1", "model.width=4", "model.latent_dim=8", "classifier.linear.c_grid=[1.0]"],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data", required=True, help="npz: x_train, y_train, x_test, y_test (Keras layout) or x, y"
    )
    p.add_argument(
        "--params", default=str(REPO / "params.yaml"), help="base params file (default: params.yaml)"
    )
    p.add_argument(
        "--preset", default=None, help="a params overlay merged onto --params, e.g. params-fast.yaml"
    )
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="params override (repeatable)"
    )
    p.add_argument("--target", type=float, default=0.99, help="test accuracy to reach (default 0.99)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the params file's `device`)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for every process (OMP_NUM_THREADS and pretrain.threads); default: each picks its "
        "own",
    )
    p.add_argument(
        "--seed-epochs", type=int, default=None, help="textbook autoencoder epochs (default: pretrain.epochs)"
    )
    p.add_argument("--seed-batch", type=int, default=256, help="textbook DataLoader batch size (default 256)")
    p.add_argument("--no-seed", action="store_true", help="skip the textbook approach")
    p.add_argument("--limit", type=int, default=None, help="first N training and N//5 test images only")
    p.add_argument("--smoke", action="store_true", help=f"tiny run for CI: {SMOKE}")
    p.add_argument("--profile", action="store_true", help="also print a torch.profiler table of pretraining")
    p.add_argument(
        "--settings",
        type=int,
        default=0,
        metavar="N",
        help="first measure each fast path (channels_last, bf16, threads, batch, compile) on N training "
        "images",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of --settings (default 3)")
    p.add_argument(
        "--no-compile", action="store_true", help="--settings without the torch.compile measurement"
    )
    p.add_argument("--skip-pipeline", action="store_true", help="only --settings / --profile, no speedrun")
    p.add_argument("--keep", default=None, help="work in this directory and keep it (default: a temp dir)")
    p.add_argument("--seed-worker", default=None, help=argparse.SUPPRESS)  # internal: the textbook process
    return p.parse_args(argv)


def load_arrays(path: Path) -> dict[str, Any]:
    """The npz's arrays through the project's own reader (layouts, dtypes, checks), as uint8 N×C×H×W."""
    from aepipe.config import DataConfig
    from aepipe.data.sources import load_npz_source

    raw = load_npz_source(str(path), DataConfig(source=f"npz:{path}"))
    if raw.x_test is None:
        sys.exit(f"--data {path}: no x_test/y_test; the speedrun scores the source's own test split")
    return {"x_train": raw.x, "y_train": raw.y, "x_test": raw.x_test, "y_test": raw.y_test}


def limited(path: Path, limit: int, dest: Path) -> Path:
    """A copy of the npz with the first ``limit`` training and ``limit // 5`` test images."""
    import numpy as np

    arrays = load_arrays(path)
    n_test = max(limit // 5, 1)
    np.savez(
        dest,
        x_train=arrays["x_train"][:limit],
        y_train=arrays["y_train"][:limit],
        x_test=arrays["x_test"][:n_test],
        y_test=arrays["y_test"][:n_test],
    )
    return dest


def build_params(args: argparse.Namespace, data: Path) -> Any:
    """--params, then --preset, then --set, then data.source / device / threads: validated once."""
    import yaml

    from aepipe.config import load_params, override_tree, parse_params

    tree = load_params(args.params).model_dump(mode="json")
    if args.preset:
        overlay = yaml.safe_load(Path(args.preset).read_text()) or {}
        merge(tree, overlay)
    sets = [*(SMOKE["sets"] if args.smoke else []), *args.set]
    values: dict[str, Any] = {"data.source": f"npz:{data}"}
    if args.device:
        values["device"] = args.device
    if args.threads:
        values["pretrain.threads"] = args.threads
    return parse_params(override_tree(tree, sets, values, flag="--set"), "bench/speedrun.py params")


def merge(tree: dict[str, Any], overlay: dict[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            merge(tree[key], value)
        else:
            tree[key] = value


def stage_commands() -> dict[str, list[str]]:
    """Each stage's command line from dvc.yaml, the installed `aepipe` entry point replaced by
    this interpreter's ``-m aepipe.cli`` (the same main function)."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    commands = {}
    for name in STAGES:
        argv = shlex.split(stages[name]["cmd"])
        if argv[0] != "aepipe":
            raise SystemExit(f"dvc.yaml: stage {name} does not run the aepipe CLI: {stages[name]['cmd']!r}")
        commands[name] = [sys.executable, "-m", "aepipe.cli", *argv[1:]]
    return commands


def child_env(work: Path, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env |= {
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "AEPIPE_CHECKPOINT_DIR": str(work / ".checkpoints"),
        "AEPIPE_PROGRESS": "0",
        "DVC_NO_ANALYTICS": "1",
    }
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_project(params: Any, work: Path, threads: int | None) -> dict[str, Any]:
    """The dvc.yaml stages, one process each, timed; returns seconds per stage and the metrics."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    env, seconds = child_env(work, threads), {}
    for name, argv in stage_commands().items():
        start = time.perf_counter()
        done = subprocess.run(argv, check=False, cwd=work, env=env, capture_output=True, text=True)
        seconds[name] = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"stage {name} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        print(f"  project  {name:9} {seconds[name]:8.1f} s", flush=True)
    metrics = {
        f: json.loads((work / "metrics" / f"{f}.json").read_text()) for f in ("pretrain", "train", "eval")
    }
    return {"seconds": seconds, "accuracy": metrics["eval"]["test_accuracy"], "metrics": metrics}


# ---- the textbook approach (runs in its own process: python bench/speedrun.py --seed-worker JSON) ----


def seed_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the npz, train the plain conv autoencoder with a per-sample DataLoader, fit logistic
    regression on its codes, score the test images. Returns seconds per step and the accuracy."""
    t = {"start": time.perf_counter()}
    import numpy as np
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from torchvision.transforms import ToTensor

    from aepipe.models import ModelSpec, build_autoencoder

    arrays = load_arrays(Path(spec["data"]))
    x, y, xt, yt = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    t["load"] = time.perf_counter()

    class NumpyImages(torch.utils.data.Dataset):  # the seed-style data path of bench/throughput.py
        def __init__(self, images: np.ndarray) -> None:
            self.images, self.to_tensor = images, ToTensor()

        def __len__(self) -> int:
            return len(self.images)

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.to_tensor(self.images[i].transpose(1, 2, 0))  # H×W×C uint8 -> C×H×W float

    device = torch.device(spec["device"])
    torch.manual_seed(spec["seed"])
    mean = [float(x[:, c].mean() / 255.0) for c in range(x.shape[1])]
    std = [float(x[:, c].std() / 255.0) for c in range(x.shape[1])]
    model = build_autoencoder(
        ModelSpec(
            name="conv",
            input_shape=tuple(x.shape[1:]),
            latent_dim=spec["latent_dim"],
            width=spec["width"],
            depth=spec["depth"],
            features="latent",
            mean=tuple(mean),
            std=tuple(std),
        )
    ).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=spec["lr"])
    loader = torch.utils.data.DataLoader(
        NumpyImages(x), batch_size=spec["batch"], shuffle=True, num_workers=0
    )
    for _ in range(spec["epochs"]):
        model.train()
        for xb in loader:
            xb = xb.to(device)
            loss, _ = model.loss(xb, model(xb))
            opt.zero_grad()
            loss.backward()
            opt.step()
    t["train AE"] = time.perf_counter()

    model.eval()
    with torch.no_grad():
        codes = [
            torch.cat(
                [
                    model.encode(xb.to(device)).float().cpu()
                    for xb in torch.utils.data.DataLoader(NumpyImages(images), batch_size=1024)
                ]
            ).numpy()
            for images in (x, xt)
        ]
    t["codes"] = time.perf_counter()
    scaler = StandardScaler().fit(codes[0])
    clf = LogisticRegression(max_iter=1000).fit(scaler.transform(codes[0]), y)
    t["fit LR"] = time.perf_counter()
    accuracy = float((clf.predict(scaler.transform(codes[1])) == yt).mean())
    t["score"] = time.perf_counter()
    marks = ["start", *SEED_PARTS]
    return {
        "seconds": {part: t[part] - t[prev] for prev, part in itertools.pairwise(marks)},
        "accuracy": accuracy,
    }


def run_seed(
    params: Any, data: Path, epochs: int, batch: int, threads: int | None, work: Path
) -> dict[str, Any]:
    from aepipe.training.device import resolve_device

    spec = {
        "data": str(data),
        "device": str(resolve_device(params.device)),
        "epochs": epochs,
        "batch": batch,
        "lr": params.pretrain.lr,
        "width": params.model.width,
        "depth": params.model.depth,
        "latent_dim": params.model.latent_dim,
        "seed": params.seed,
        "threads": threads,
    }
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--data",
            str(data),
            "--seed-worker",
            json.dumps(spec),
        ],
        env=child_env(work, threads),
        check=False,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the textbook approach failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # Wall time of the process (imports included, as for each project stage); the interpreter's
    # start-up and imports are booked on its first step.
    result["seconds"]["load"] += wall - sum(result["seconds"].values())
    for part, secs in result["seconds"].items():
        print(f"  textbook {part:9} {secs:8.1f} s", flush=True)
    return result


def profile_pretraining(params: Any, data: Path, steps: int = 30) -> None:
    """torch.profiler over ``steps`` steps of the project's pretraining loop, on the chosen device."""
    import numpy as np
    import torch
    from torch.profiler import ProfilerActivity, profile

    from aepipe.models import build_autoencoder
    from aepipe.stages.pretrain import spec_from_params
    from aepipe.training.device import resolve_device, seed_everything
    from aepipe.training.pretrain import pretrain

    arrays = load_arrays(data)
    x, y = arrays["x_train"], arrays["y_train"]
    n = min(len(x), steps * params.pretrain.batch_size)
    device = resolve_device(params.device)
    mean = [float(x[:, c].mean() / 255.0) for c in range(x.shape[1])]
    std = [float(x[:, c].std() / 255.0) for c in range(x.shape[1])]
    spec = spec_from_params(params, tuple(x.shape[1:]), mean, std, n_classes=int(y.max()) + 1)
    cfg = params.pretrain.model_copy(update={"epochs": 2, "data_mode": "memory"})
    yl = np.asarray(y[:n], dtype=np.int64)
    seed_everything(params.seed)
    pretrain(build_autoencoder(spec), x[:n], x[:256], cfg, torch.Generator(), device, None, yl, yl[:256])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    seed_everything(params.seed)
    model = build_autoencoder(spec)
    with profile(activities=activities) as prof:
        pretrain(model, x[:n], x[:256], cfg, torch.Generator(), device, None, yl, yl[:256])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\ntorch.profiler: 2 epochs of {n} images (the first warmed up beforehand), {device}")
    print(prof.key_averages().table(sort_by=sort, row_limit=25))


def measure_settings(
    params: Any, data: Path, n: int, repeats: int, compile_too: bool = True
) -> dict[str, tuple[float, ...]]:
    """Each fast path's effect on the project's pretraining loop (one epoch of ``n`` images with its
    validation pass), as images/s relative to a plain fp32 NCHW epoch measured in the same repeat;
    the settings take turns in a rotating order, and the ratio is the median over repeats. With
    ``compile``, the seconds the first (compiling) epoch costs beyond a plain one are reported too."""
    import dataclasses
    import statistics

    import torch

    from aepipe.models import build_autoencoder
    from aepipe.stages.pretrain import spec_from_params
    from aepipe.training import device as dev_mod
    from aepipe.training.device import resolve_device
    from aepipe.training.pretrain import pretrain

    arrays = load_arrays(data)
    x, y = arrays["x_train"][:n], arrays["y_train"][:n].astype("int64")
    n_val = max(len(x) // 10, 1)
    device = resolve_device(params.device)
    mean = [float(x[:, c].mean() / 255.0) for c in range(x.shape[1])]
    std = [float(x[:, c].std() / 255.0) for c in range(x.shape[1])]
    spec = spec_from_params(params, tuple(x.shape[1:]), mean, std, n_classes=int(y.max()) + 1)
    threads = torch.get_num_threads()
    plain = {"channels_last": False, "compile": False, "threads": threads, "data_mode": "memory"}
    fast = dev_mod.fast_paths(device)

    def epoch_seconds(epochs: int = 1, bf16: bool = False, **cfg: Any) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each epoch. CPU seconds (this process, all threads) are the
        steadier measure of work on a machine other processes load; wall is what a user waits."""
        cfg = params.pretrain.model_copy(update={**plain, "epochs": epochs, **cfg})
        saved = dev_mod.FAST_PATHS.get(device.type)
        dev_mod.FAST_PATHS[device.type] = dataclasses.replace(fast, bf16_autocast=bf16)
        torch.manual_seed(params.seed)
        model = build_autoencoder(spec)
        marks = [(time.perf_counter(), time.process_time())]
        try:
            pretrain(
                model,
                x[n_val:],
                x[:n_val],
                cfg,
                torch.Generator(),
                device,
                lambda _: marks.append((sync(device), time.process_time())),
                y[n_val:],
                y[:n_val],
            )
        finally:
            if saved is not None:
                dev_mod.FAST_PATHS[device.type] = saved
        return [(b[0] - a[0], b[1] - a[1]) for a, b in itertools.pairwise(marks)]

    variants: dict[str, dict[str, Any]] = {
        "plain": {},
        "channels_last": {"channels_last": True},
        "bf16_autocast": {"bf16": True},
        f"batch {2 * params.pretrain.batch_size}": {"batch_size": 2 * params.pretrain.batch_size},
    }
    if threads > 1:
        variants["threads 1"] = {"threads": 1}
    elif dev_mod.available_cpus() > 1:
        variants[f"threads {dev_mod.available_cpus()}"] = {"threads": dev_mod.available_cpus()}
    epoch_seconds()  # warm-up: allocator, kernels (cuDNN autotuning on CUDA)
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    keys = list(variants)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:
            samples[key].append(epoch_seconds(**variants[key])[0])
        print(
            f"  settings repeat {r + 1}/{repeats} (wall/CPU s): "
            + " ".join(f"{k}={v[-1][0]:.1f}/{v[-1][1]:.1f}" for k, v in samples.items()),
            flush=True,
        )
    ratios = {
        k: tuple(
            statistics.median(p[i] / v[i] for p, v in zip(samples["plain"], samples[k], strict=True))
            for i in (0, 1)
        )
        for k in keys
    }
    ratios["extract channels_last"] = extract_effect(spec, x, device, repeats)
    if compile_too:
        # against eager with the device's own fast paths, the setting compile would join
        auto = {"channels_last": fast.channels_last, "bf16": fast.bf16_autocast}
        compile_effect(ratios, lambda **kw: epoch_seconds(**auto, **kw), device)
    print(
        f"\nfast paths on {device} ({len(x) - n_val} images, batch {params.pretrain.batch_size}, {threads} "
        f"threads; x = images/s relative to plain fp32 NCHW, medians of {repeats} interleaved repeats):"
    )
    print(f"  {'setting':22} {'by wall time':>12} {'by CPU time':>12}")
    for key, (wall, cpu) in ratios.items():
        if key == "compile seconds":
            print(f"  {key:22} {wall:11.1f}s {cpu:11.1f}s   (the first epoch's extra cost)")
        else:
            print(f"  {key:22} {'x' + format(wall, '.2f'):>12} {'x' + format(cpu, '.2f'):>12}")
    print(
        f"  auto on {device.type}: channels_last={fast.channels_last} bf16_autocast={fast.bf16_autocast} "
        f"compile from {fast.compile_from_steps} steps"
    )
    return ratios


def extract_effect(spec: Any, x: Any, device: Any, repeats: int) -> tuple[float, float]:
    """Feature extraction (inference, batches of 1024) with NHWC against NCHW: (wall, CPU) ratios."""
    import dataclasses
    import statistics

    import torch

    from aepipe.models import build_autoencoder
    from aepipe.training import device as dev_mod
    from aepipe.training.features import extract_features

    fast = dev_mod.fast_paths(device)
    samples: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    model = build_autoencoder(spec)
    try:
        for r in range(repeats + 1):  # the first round warms up
            for layout in (r % 2 == 0, r % 2 == 1):
                dev_mod.FAST_PATHS[device.type] = dataclasses.replace(fast, channels_last=layout)
                start = (time.perf_counter(), time.process_time())
                extract_features(model.to(memory_format=torch.contiguous_format), x, device)
                if r:
                    samples[layout].append((sync(device) - start[0], time.process_time() - start[1]))
    finally:
        dev_mod.FAST_PATHS[device.type] = fast
    return tuple(
        statistics.median(a[i] / b[i] for a, b in zip(samples[False], samples[True], strict=True))
        for i in (0, 1)
    )


def compile_effect(ratios: dict[str, tuple[float, ...]], epoch_seconds: Any, device: Any) -> None:
    """3 compiled epochs (the first pays the compilation), then 3 eager ones: the steady ratio over
    epochs 2-3, and the first epoch's extra seconds."""
    import statistics

    try:
        compiled = epoch_seconds(epochs=3, compile=True)
        eager = epoch_seconds(epochs=3)
    except Exception as exc:  # a missing compiler toolchain is reported, not fatal
        print(f"  torch.compile failed on {device.type}: {exc.__class__.__name__}: {str(exc)[:200]}")
        return
    ratios["compile (steady)"] = tuple(
        statistics.median(e[i] for e in eager[1:]) / statistics.median(c[i] for c in compiled[1:])
        for i in (0, 1)
    )
    ratios["compile seconds"] = tuple(compiled[0][i] - eager[0][i] for i in (0, 1))


def sync(device: Any) -> float:
    """The time once the device has finished its queued work (CUDA runs asynchronously)."""
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def table(project: dict[str, Any], seed: dict[str, Any] | None, label: str) -> None:
    head = ["approach", *STAGES, "total s", "test accuracy"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    ps = project["seconds"]
    print(
        f"| {label} | "
        + " | ".join(f"{ps[s]:.1f}" for s in STAGES)
        + f" | {sum(ps.values()):.1f} | {100 * project['accuracy']:.2f}% |"
    )
    if seed is not None:
        ss = seed["seconds"]
        print(
            "| textbook: conv AE, per-sample DataLoader, LR on codes | "
            + " | ".join(f"{ss[s]:.1f} ({s})" for s in SEED_PARTS)
            + f" | {sum(ss.values()):.1f} | {100 * seed['accuracy']:.2f}% |"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path[:0] = [str(REPO / "src")]
    if args.seed_worker:
        print(json.dumps(seed_worker(json.loads(args.seed_worker))))
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data).resolve()
    if not data.is_file():
        sys.exit(f"--data {data}: no such file; pass an .npz (e.g. ../shared/data/mnist.npz)")
    with tempfile.TemporaryDirectory(prefix="aepipe-speedrun-") as tmp:
        work = Path(args.keep).resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        limit = args.limit or (SMOKE["limit"] if args.smoke else None)
        if limit:
            data = limited(data, limit, work / "limited.npz")
        params = build_params(args, data)
        print(
            f"data {data}; model {params.model.name} (width {params.model.width}, depth "
            f"{params.model.depth}, features {params.model.features}), pretrain {params.pretrain.epochs} "
            f"epochs, batch {params.pretrain.batch_size}, head {params.classifier.head}, labels_per_class "
            f"{params.classifier.labels_per_class}, device {params.device}; torch {torch.__version__}, "
            f"{os.cpu_count()} CPUs, threads {args.threads or 'default'}; load average "
            f"{os.getloadavg()[0]:.2f}",
            flush=True,
        )
        if args.settings:
            measure_settings(params, data, args.settings, args.repeats, not args.no_compile)
        if args.profile:
            profile_pretraining(params, data)
        if args.skip_pipeline:
            return 0
        result = speedrun(args, params, data, work)
    print(
        f"RESULT target={args.target} reached={result['reached']:.4f} seconds={result['seconds']:.1f} "
        f"seed_seconds={result['seed_seconds']:.1f} seed_acc={result['seed_acc']:.4f}"
    )
    return 0


def speedrun(args: argparse.Namespace, params: Any, data: Path, work: Path) -> dict[str, float]:
    """The project's pipeline, then the textbook approach, back to back; prints the table."""
    load_before = os.getloadavg()[0]
    project = run_project(params, work / "project", args.threads)
    epochs = args.seed_epochs if args.seed_epochs is not None else params.pretrain.epochs
    seed = None if args.no_seed else run_seed(params, data, epochs, args.seed_batch, args.threads, work)
    load_after = os.getloadavg()[0]
    table(
        project,
        seed,
        f"aepipe: {params.model.name}, {params.pretrain.epochs} epochs, {params.classifier.head}",
    )
    pm = project["metrics"]["pretrain"]
    total = sum(project["seconds"].values())
    verdict = "target reached" if project["accuracy"] >= args.target else "target MISSED"
    print(
        f"\nproject: {100 * project['accuracy']:.2f}% test accuracy in {total:.1f} s ({verdict}: "
        f"{100 * args.target:.2f}%); its pretraining loop {pm['seconds']:.1f} s at "
        f"{pm['images_per_second']:.0f} img/s"
    )
    if seed is not None:
        print(
            f"textbook ({epochs} epochs, batch {args.seed_batch}): {100 * seed['accuracy']:.2f}% in "
            f"{sum(seed['seconds'].values()):.1f} s"
        )
    print(f"load average (1 min): {load_before:.2f} at the start, {load_after:.2f} at the end")
    return {
        "reached": project["accuracy"],
        "seconds": total,
        "seed_seconds": sum(seed["seconds"].values()) if seed else float("nan"),
        "seed_acc": seed["accuracy"] if seed else float("nan"),
    }


if __name__ == "__main__":
    sys.exit(main())

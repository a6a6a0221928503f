"""Throughput benchmark: the project's pretraining loop against a seed-style loop and the compute floor.

For params.yaml's autoencoder (its model section: vae_joint by default) on the training images
of --data (default: the embedded digits), one run measures, all at batch size 256:

  (a) seed_ips    a seed-style loop: torch DataLoader over a per-sample numpy Dataset with
                  ToTensor, num_workers=0, shuffle, then forward/backward/step;
  (b) project_ips the project's loop (aepipe.training.pretrain.pretrain, one epoch, data in memory,
                  90/10 train/val split: the epoch includes its validation pass and its checkpoint,
                  as in the pretrain stage);
  (c) floor_ips   the same model's forward/backward/step over float batches built beforehand, with
                  the project's settings for the device (bf16 autocast + channels_last on CUDA);
  (d) seed_data_ips / project_data_ips  the data paths of (a) and (b) alone, no model; plus the
                  streaming path (blocks read from an x.npy file) as stream_data_ips;
  extract_ips (features of every image streamed from x.npy into a .npy), peak RSS, and what
  channels_last and torch.compile change in (b) on this device. With CUDA present the same figures
  follow for CUDA, plus the seconds of one 60k-image epoch.

A variant that learns from labels (vae_joint) gets the labels of the classifier.labels_per_class
subset (-1 elsewhere) in all three loops, as the pretrain stage gives them; its
``labelled_per_batch`` extra images per step are set to 0 here so that (a), (b) and (c) compute
the very same steps (the stage adds them; they cost (batch + labelled_per_batch) / batch more).

Loops run interleaved (in a rotating order), --repeats times each. Figures are medians over the
repeats (the best is printed beside them); each ratio is the median of the ratios measured within
the same repeat, so load from other processes that drifts between repeats cancels out. On a quiet
machine the two readings agree. The last line is

  RESULT seed_ips=... project_ips=... floor_ips=... data_ratio=... floor_ratio=... extract_ips=...
         peak_rss_mb=...

(one line; wrapped here)

with data_ratio = project_data_ips / seed_data_ips and floor_ratio = project_ips / floor_ips.

    PYTHONPATH=src:. python bench/throughput.py --data ../shared/data/mnist.npz
    PYTHONPATH=src:. python bench/throughput.py --smoke     # CI: digits, 1000 images, 1 repeat, seconds
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BATCH = 256


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        default="digits",
        help="npz with x_train + y_train (Keras layout) or x + y; default: the embedded digits",
    )
    p.add_argument(
        "--params", default=str(REPO / "params.yaml"), help="params file whose model section is benchmarked"
    )
    p.add_argument(
        "--limit", type=int, default=None, help="use only the first N training images (default: all)"
    )
    p.add_argument("--repeats", type=int, default=3, help="measured epochs per loop (best counts)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    p.add_argument("--devices", default="auto", help="cpu, cuda, or auto (= cpu, plus cuda when present)")
    p.add_argument(
        "--smoke", action="store_true", help="CI check: --limit 1000 --repeats 1 --no-compile --threads 1"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.limit, args.repeats, args.no_compile = args.limit or 1000, 1, True
        args.threads = args.threads or 1
    return args


def load_images(path: str, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Training images and labels (0..K-1) of an npz, or of the embedded digits."""
    from aepipe.config import DataConfig
    from aepipe.data.sources import load_source

    raw = load_source(DataConfig(source="digits" if path == "digits" else f"npz:{path}"))
    return np.ascontiguousarray(raw.x[:limit]), np.ascontiguousarray(raw.y[:limit])


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], int], device: torch.device) -> float:
    """Images per second of one call of ``fn`` (which returns how many images it processed)."""
    sync(device)
    t0 = time.perf_counter()
    n = fn()
    sync(device)
    return n / (time.perf_counter() - t0)


class Bench:
    def __init__(
        self, x: np.ndarray, y: np.ndarray, params: Any, device: torch.device, workdir: Path
    ) -> None:
        import dataclasses

        from aepipe.data.blockio import NpyRows
        from aepipe.data.splits import labelled_subset
        from aepipe.stages.pretrain import spec_from_params

        self.device, self.params = device, params
        n_val = len(x) // 10
        self.x_train, self.x_val = x[n_val:], x[:n_val]
        mean = [float(x[:, c].mean() / 255.0) for c in range(x.shape[1])]
        std = [float(x[:, c].std() / 255.0) for c in range(x.shape[1])]
        spec = spec_from_params(params, tuple(x.shape[1:]), mean, std, n_classes=int(y.max()) + 1)
        if "labelled_per_batch" in spec.options:  # the same steps in (a), (b) and (c): see the docstring
            spec = dataclasses.replace(spec, options={**spec.options, "labelled_per_batch": 0})
        self.spec = spec
        self.uses_labels = self.model().uses_labels
        y_train = y[n_val:]
        known = labelled_subset(y_train, params.classifier.labels_per_class, params.seed)
        self.y_train = np.full(len(y_train), -1, dtype=np.int64)
        self.y_train[known] = y_train[known]
        self.y_val = y[:n_val].astype(np.int64)
        self.y_train_t = torch.from_numpy(self.y_train).to(device)
        np.save(workdir / "x.npy", x)
        self.rows = NpyRows(workdir / "x.npy")
        self.workdir = workdir

    def model(self, channels_last: bool = False) -> torch.nn.Module:
        from aepipe.models import build_autoencoder

        torch.manual_seed(0)
        model = build_autoencoder(self.spec).to(self.device)
        return model.to(memory_format=torch.channels_last) if channels_last else model

    def cfg(self, **kw: Any) -> Any:
        return self.params.pretrain.model_copy(
            update={"epochs": 1, "batch_size": BATCH, "data_mode": "memory", **kw}
        )

    # (a) and its data path
    def seed_loader(self) -> torch.utils.data.DataLoader:
        from torchvision.transforms import ToTensor

        class NumpyImages(torch.utils.data.Dataset):
            def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
                self.x, self.y, self.to_tensor = x, y, ToTensor()

            def __len__(self) -> int:
                return len(self.x)

            def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
                # H x W x C uint8 -> C x H x W float in [0, 1]
                return self.to_tensor(self.x[i].transpose(1, 2, 0)), int(self.y[i])

        return torch.utils.data.DataLoader(
            NumpyImages(self.x_train, self.y_train), batch_size=BATCH, shuffle=True, num_workers=0
        )

    def seed_loop(self) -> int:
        model, loader = self.model(), self.seed_loader()
        opt = torch.optim.Adam(model.parameters(), lr=self.params.pretrain.lr)
        model.train()
        for xb, yb in loader:
            xb = xb.to(self.device)
            labels = yb.to(self.device) if self.uses_labels else None
            loss, _ = model.loss(xb, model(xb), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return len(self.x_train)

    def seed_data(self) -> int:
        n = 0
        for xb, _ in self.seed_loader():
            n += len(xb.to(self.device))
        return n

    # (b) and its data paths
    def project_loop(self, **cfg: Any) -> int:
        from aepipe.training.checkpoint import Checkpointer
        from aepipe.training.pretrain import pretrain

        ckpt = Checkpointer(self.workdir / "checkpoint")
        ckpt.clear()  # a fresh run each time, never a resume
        pretrain(
            self.model(),
            self.x_train,
            self.x_val,
            self.cfg(**cfg),
            torch.Generator().manual_seed(0),
            self.device,
            None,
            self.y_train,
            self.y_val,
            checkpoint=ckpt,
        )
        return len(self.x_train)

    def project_data(self) -> int:
        from aepipe.training.batches import make_source
        from aepipe.training.pretrain import to_float

        source = make_source(self.x_train, None, "memory", self.device, 0)
        n = 0
        for xb, _ in source.epoch(BATCH, torch.Generator().manual_seed(0)):
            n += len(to_float(xb, False))
        return n

    def stream_data(self) -> int:
        from aepipe.training.batches import make_source
        from aepipe.training.pretrain import to_float

        source = make_source(
            self.rows, None, "stream", self.device, self.params.pretrain.stream_buffer_mb << 20
        )
        n = 0
        for xb, _ in source.epoch(BATCH, torch.Generator().manual_seed(0)):
            n += len(to_float(xb, False))
        return n

    # (c)
    def floor_batches(self) -> list[torch.Tensor]:
        from aepipe.training.device import wants_channels_last

        if not hasattr(self, "_floor"):
            cl = wants_channels_last("auto", self.device)
            self._floor = [
                torch.from_numpy(self.x_train[i : i + BATCH]).to(self.device).float().div_(255.0)
                for i in range(0, len(self.x_train), BATCH)
            ]
            if cl:
                self._floor = [b.contiguous(memory_format=torch.channels_last) for b in self._floor]
        return self._floor

    def floor_loop(self) -> int:
        from aepipe.training.device import autocast, wants_channels_last

        batches = self.floor_batches()
        model = self.model(wants_channels_last("auto", self.device))
        opt = torch.optim.Adam(model.parameters(), lr=self.params.pretrain.lr)
        model.train()
        for i, xb in enumerate(batches):
            labels = self.y_train_t[i * BATCH : (i + 1) * BATCH] if self.uses_labels else None
            with autocast(self.device):
                loss, _ = model.loss(xb, model(xb), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return len(self.x_train)

    def extract(self) -> int:
        from aepipe.training.features import extract_to_npy

        return extract_to_npy(
            self.model(),
            self.rows,
            self.device,
            self.workdir / "features.npy",
            self.params.evaluate.batch_size,
        )[0]

    def compile_gain(self, epochs: int = 3) -> tuple[float, float]:
        """(compiled, eager) images/s: medians over epochs 2.. of a compiled run (the first epoch
        pays the compilation) and of the eager run right after it."""
        from aepipe.training.pretrain import pretrain

        rates = []
        for compiled in (True, False):
            history = pretrain(
                self.model(),
                self.x_train,
                self.x_val,
                self.cfg(epochs=epochs, compile=compiled),
                torch.Generator().manual_seed(0),
                self.device,
                None,
                self.y_train,
                self.y_val,
            )
            rates.append(statistics.median(len(self.x_train) / h.seconds for h in history[1:]))
        return rates[0], rates[1]


def measure(bench: Bench, repeats: int, compile_too: bool) -> dict[str, float]:
    dev = bench.device
    from aepipe.training.device import wants_channels_last

    default_cl = wants_channels_last("auto", dev)
    loops: dict[str, Callable[[], int]] = {
        "seed_ips": bench.seed_loop,
        "project_ips": bench.project_loop,
        "floor_ips": bench.floor_loop,
        "seed_data_ips": bench.seed_data,
        "project_data_ips": bench.project_data,
        "stream_data_ips": bench.stream_data,
        "extract_ips": bench.extract,
        "project_other_layout_ips": lambda: bench.project_loop(channels_last=not default_cl),
    }
    bench.project_data()  # warm-up: allocator, kernels, cuDNN autotuning
    bench.floor_batches()
    bench.floor_loop()
    samples: dict[str, list[float]] = {k: [] for k in loops}
    keys = list(loops)
    for r in range(repeats):
        for key in keys[r % len(keys) :] + keys[: r % len(keys)]:  # rotate, so no loop always runs first
            samples[key].append(timed(loops[key], dev))
        print(
            f"  [{dev.type}] repeat {r + 1}/{repeats}: "
            + " ".join(f"{k}={v[-1]:.0f}" for k, v in samples.items()),
            flush=True,
        )
    out = {k: statistics.median(v) for k, v in samples.items()} | {"default_channels_last": float(default_cl)}
    for key, values in samples.items():
        print(
            f"  {dev.type:4} {key:24} median {statistics.median(values):12.0f}  best {max(values):12.0f} "
            "img/s"
        )
    for name, num, den in (
        ("floor_ratio", "project_ips", "floor_ips"),
        ("data_ratio", "project_data_ips", "seed_data_ips"),
        ("layout_ratio", "project_other_layout_ips", "project_ips"),
    ):
        ratios = [a / b for a, b in zip(samples[num], samples[den], strict=True)]
        out[name] = statistics.median(ratios)
        print(
            f"  {dev.type:4} {name:24} median {out[name]:.3f} of {', '.join(f'{r:.3f}' for r in ratios)} "
            f"(each {num} / {den} of one repeat)"
        )
    if compile_too:
        try:
            out["compiled_ips"], out["eager_ips"] = bench.compile_gain()
        except Exception as exc:  # the compiler toolchain may be missing; report it, do not fail the bench
            print(f"  torch.compile failed on {dev.type}: {exc.__class__.__name__}: {str(exc)[:200]}")
    return out


def report(dev: torch.device, r: dict[str, float], n: int) -> None:
    print(f"\n== {dev.type} ({n} training images, batch {BATCH}) ==")
    print(f"(a) seed-style loop       {r['seed_ips']:10.0f} img/s")
    print(
        f"(b) project loop          {r['project_ips']:10.0f} img/s   {r['project_ips'] / r['seed_ips']:.2f}x "
        "the seed-style loop"
    )
    print(
        f"(c) compute floor         {r['floor_ips']:10.0f} img/s   floor_ratio (b)/(c) = "
        f"{r['floor_ratio']:.3f}"
    )
    print(f"(d) seed data path        {r['seed_data_ips']:10.0f} img/s")
    print(
        f"(d) project data path     {r['project_data_ips']:10.0f} img/s   data_ratio = {r['data_ratio']:.1f}"
    )
    print(f"    streamed data path    {r['stream_data_ips']:10.0f} img/s   (blocks read from x.npy)")
    print(f"    extraction            {r['extract_ips']:10.0f} img/s")
    gain = r["layout_ratio"] if not r["default_channels_last"] else 1 / r["layout_ratio"]
    print(
        f"    channels_last         x{gain:.2f} on the project loop (on vs off; default here: "
        f"{'on' if r['default_channels_last'] else 'off'})"
    )
    if "compiled_ips" in r:
        print(
            f"    torch.compile         x{r['compiled_ips'] / r['eager_ips']:.2f} on the project loop "
            f"({r['compiled_ips']:.0f} vs {r['eager_ips']:.0f} img/s eager, measured back to back)"
        )
    if dev.type == "cuda":
        print(f"    one 60k-image epoch   {60000 / r['project_ips']:10.3f} s (project loop)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sys.path[:0] = [str(REPO / "src")]
    from aepipe.config import load_params

    params = load_params(args.params)
    x, y = load_images(args.data, args.limit)
    devices = [torch.device("cpu")] if args.devices in ("auto", "cpu") else []
    if args.devices == "cuda" or (args.devices == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    print(
        f"data {args.data}: {x.shape}, model {params.model.name} width {params.model.width} depth "
        f"{params.model.depth}, torch {torch.__version__}, {torch.get_num_threads()} threads, repeats "
        f"{args.repeats}"
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="aepipe-throughput-") as tmp:
        for dev in devices:
            results[dev.type] = measure(
                Bench(x, y, params, dev, Path(tmp)), args.repeats, not args.no_compile
            )
            report(dev, results[dev.type], len(x) - len(x) // 10)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    r = results["cpu"] if "cpu" in results else results["cuda"]
    fields = {
        "seed_ips": r["seed_ips"],
        "project_ips": r["project_ips"],
        "floor_ips": r["floor_ips"],
        "data_ratio": r["data_ratio"],
        "floor_ratio": r["floor_ratio"],
        "extract_ips": r["extract_ips"],
        "peak_rss_mb": peak_mb,
    }
    if "cuda" in results:
        c = results["cuda"]
        fields |= {
            "cuda_project_ips": c["project_ips"],
            "cuda_floor_ratio": c["floor_ratio"],
            "cuda_epoch60k_s": 60000 / c["project_ips"],
        }
    print("\nRESULT " + " ".join(f"{k}={v:.3f}" if v < 100 else f"{k}={v:.0f}" for k, v in fields.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The benchmarks run on the default params.yaml in their smoke mode (tiny sizes) and end with a
RESULT line, so a change that breaks one is caught here and not the next time someone measures.
(bench/quality.py has its own test: tests/test_bench_quality.py.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run_bench(name: str, *args: str, timeout: int = 900) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}",
        "AEPIPE_PROGRESS": "0",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / name), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), proc.stdout[-2000:]
    return dict(item.split("=", 1) for item in last.split()[1:])


def test_throughput_smoke_on_default_params() -> None:
    r = run_bench("throughput.py", "--smoke")
    for key in (
        "seed_ips",
        "project_ips",
        "floor_ips",
        "data_ratio",
        "floor_ratio",
        "extract_ips",
        "peak_rss_mb",
    ):
        assert re.fullmatch(NUMBER, r[key]) and float(r[key]) > 0, (key, r)


def test_scale_smoke_covers_every_stage_that_reads_images() -> None:
    r = run_bench("scale.py", "--smoke")
    assert r["sizes"] == "2000,4000"
    for key in ("seconds", "us_per_image", "peak_rss_mb", "train_peak_rss_mb"):
        assert re.fullmatch(rf"{NUMBER},{NUMBER}", r[key]), (key, r)
    assert 0.5 < float(r["rss_ratio"]) < 2.0, r  # tiny sizes: the same process footprint


def test_kfp_overhead_smoke_runs_both_paths_to_the_same_metrics() -> None:
    r = run_bench("kfp_overhead.py", "--smoke")
    assert float(r["dvc_repro_s"]) > 0 and float(r["kfp_local_s"]) > 0 and int(r["yaml_bytes"]) > 1000
    assert 0.0 <= float(r["dvc_test_accuracy"]) <= 1.0
    assert r["dvc_test_accuracy"] == r["kfp_test_accuracy"]  # the same stages, the same result on CPU

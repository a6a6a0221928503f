"""bench/quality.py end to end on a toy npz: every row and column filled, one RESULT line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, toy_images, write_npz

pytestmark = pytest.mark.slow


def test_quality_table_has_every_row_and_a_result_line(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=40, classes=3)
    xt, yt = toy_images(n_per_class=10, classes=3, seed=1)
    data = write_npz(tmp_path / "toy.npz", x_train=x[:, 0], y_train=y, x_test=xt[:, 0], y_test=yt)
    cmd = [
        sys.executable,
        str(REPO / "bench" / "quality.py"),
        "--data",
        str(data),
        "--variants",
        "conv,vae_joint",
        "--epochs",
        "1",
        "--set",
        "model.width=4",
        "--set",
        "classifier.finetune.max_epochs=1",
        "--set",
        "classifier.mlp.max_epochs=1",
        "--out",
        str(tmp_path / "out"),
    ]
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [
        line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| row")
    ]
    names = [r.split(" | ")[0].strip("| ") for r in rows]
    assert names == [
        "LR on raw pixels",
        "PCA-50 + LR",
        "CNN from scratch (conv backbone)",
        "conv",
        "conv: untrained control",
        "vae_joint",
        "vae_joint: untrained control",
    ]
    pretrained = rows[3].split(" | ")
    assert all(re.fullmatch(r"\d+\.\d\d", cell) for cell in pretrained[1:8]), (
        pretrained
    )  # every accuracy column
    assert re.search(
        r"^RESULT best=(conv|vae_joint) linear=\d+\.\d\d finetune=\d+\.\d\d l10=\d+\.\d\d l100=\d+\.\d\d$",
        out.stdout,
        re.M,
    )
    # a second run reads every cell from the cache and prints the same table
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == [
        line for line in out.stdout.splitlines() if line.startswith("| ")
    ]

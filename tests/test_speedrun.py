"""bench/speedrun.py --smoke on a toy npz: the dvc.yaml stages as processes and the textbook
approach, a table with every stage timed, and the RESULT line; plus the fast preset's contract."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, toy_images, write_npz


@pytest.mark.slow
def test_smoke_speedrun_times_every_stage_and_ends_with_the_result_line(tmp_path: Path) -> None:
    x, y = toy_images(n_per_class=60, classes=3)
    xt, yt = toy_images(n_per_class=20, classes=3, seed=1)
    data = write_npz(tmp_path / "toy.npz", x_train=x[:, 0], y_train=y, x_test=xt[:, 0], y_test=yt)
    cmd = [sys.executable, str(REPO / "bench" / "speedrun.py"), "--data", str(data), "--smoke"]
    cmd += ["--threads", "1", "--keep", str(tmp_path / "work")]
    cmd += ["--settings", "200", "--repeats", "1", "--no-compile", "--profile"]  # every mode runs
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| approach")]
    assert len(rows) == 2, out.stdout
    project = rows[0].strip("| ").split(" | ")
    assert project[0].startswith("aepipe: vae_joint, 1 epochs") and len(project) == 8
    assert all(float(cell) > 0 for cell in project[1:7])  # five stages and the total, each timed
    result = re.fullmatch(
        r"RESULT target=0\.99 reached=(\S+) seconds=(\S+) seed_seconds=(\S+) seed_acc=(\S+)", lines[-1]
    )
    assert result, lines[-1]
    reached, seconds, seed_seconds, seed_acc = map(float, result.groups())
    assert seconds == pytest.approx(float(project[6]), abs=0.11) and seed_seconds > 0
    # Both approaches learn the separable toy classes (3 classes: chance is 1/3).
    assert reached > 0.6 and seed_acc > 0.6
    # The stages really ran as dvc.yaml's commands do: their outputs and the MLflow store are there.
    work = tmp_path / "work" / "project"
    for path in ("data/prepared/meta.json", "models/autoencoder", "features/test.npy", "metrics/eval.json"):
        assert (work / path).exists(), path
    assert (work / "mlflow.db").is_file()
    # --settings printed a ratio per fast path, --profile a torch.profiler table
    assert re.search(r"^  channels_last +x\d+\.\d\d +x\d+\.\d\d$", out.stdout, re.M)
    assert re.search(r"^  bf16_autocast +x\d", out.stdout, re.M) and "Self CPU time total" in out.stdout


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_fast_preset_is_valid_params_and_the_readme_recipe_says_the_same() -> None:
    from aepipe.config import load_params, parse_params

    overlay = yaml.safe_load((REPO / "params-fast.yaml").read_text())
    full = load_params(REPO / "params.yaml").model_dump(mode="json")
    sys.path.insert(0, str(REPO / "bench"))
    from speedrun import merge

    merge(full, overlay)
    fast = parse_params(full, "params-fast.yaml")
    for key, value in flat(overlay).items():
        assert fast.flat()[key] == value, key
    # README: the `dvc exp run` line that applies the preset sets exactly these keys.
    readme = (REPO / "README.md").read_text()
    recipe = next(line for line in readme.splitlines() if line.startswith("dvc exp run -n fast "))
    sets = dict(item.split("=", 1) for item in re.findall(r"-S (\S+)", recipe))
    assert {k: yaml.safe_load(v) for k, v in sets.items()} == flat(overlay)

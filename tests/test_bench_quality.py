"""bench/quality.py end to end on a toy npz (every row group and column filled, mean ± std over
seeds, one RESULT line), and its cell cache keyed by the code as well as the params and data."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, toy_images, write_npz

ACC = r"\d+\.\d\d"
MEAN_STD = rf"{ACC} ± {ACC}"


@pytest.mark.slow
def test_quality_table_has_every_row_group_and_a_result_line(tmp_path: Path) -> None:
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
        "--seeds",
        "2",
        "--set",
        "model.width=4",
        "--set",
        "classifier.finetune.max_epochs=1",
        "--set",
        "classifier.mlp.max_epochs=1",
        "--set",
        "classifier.semisup={max_epochs: 1, steps_per_epoch: 2, batch_size: 8, unlabelled_ratio: 2}",
        "--out",
        str(tmp_path / "out"),
    ]
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    table = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    header = table[0].split(" | ")
    assert header[1:10] == [
        "all labels: linear",
        "all labels: mlp",
        "all labels: finetune",
        "100 labels: linear",
        "100 labels: finetune",
        "100 labels: semisup",
        "1000 labels: linear",
        "1000 labels: finetune",
        "1000 labels: semisup",
    ]
    names = [r.split(" | ")[0].strip("| ") for r in table[1:]]
    assert names == [
        "**baselines**",
        "LR on raw pixels",
        "PCA-50 + LR",
        "supervised CNN (conv backbone from scratch)",
        "**label-free pretraining**",
        "conv",
        "conv: untrained control",
        "**label-using pretraining**",
        "vae_joint",
        "vae_joint: untrained control",
    ]
    conv = table[names.index("conv") + 1].split(" | ")
    assert all(re.fullmatch(ACC, c) for c in conv[1:4]), conv  # one figure per all-label column
    assert all(re.fullmatch(MEAN_STD, c) for c in conv[4:10]), conv  # mean ± std over the 2 seeds
    control = table[names.index("conv: untrained control") + 1].split(" | ")
    assert re.fullmatch(MEAN_STD, control[6]) and re.fullmatch(MEAN_STD, control[9])  # semisup control
    assert control[5] == control[8] == "—"  # fine-tuning random weights is the CNN row
    cnn = table[names.index("supervised CNN (conv backbone from scratch)") + 1].split(" | ")
    assert re.fullmatch(MEAN_STD, cnn[5]) and re.fullmatch(MEAN_STD, cnn[8])
    assert re.search(r"conv / 100 labels semisup, seed 1: test \d+\.\d\d, \d+ s wall, \d+ s CPU", out.stdout)
    assert re.search(
        rf"^RESULT free=conv free_linear={ACC} free_finetune={ACC} free_l10={ACC}±{ACC} "
        rf"free_l100={ACC}±{ACC} "
        rf"using=vae_joint using_linear={ACC} using_finetune={ACC} using_l10={ACC}±{ACC} "
        rf"using_l100={ACC}±{ACC}$",
        out.stdout,
        re.M,
    )
    # a second run reads every cell from the cache and prints the same table
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert [line for line in again.stdout.splitlines() if line.startswith("| ")] == table
    assert "  head-" not in again.stdout and "  pretrained:" not in again.stdout  # nothing recomputed
    # --control-seeds 1: the controls' budget cells are seed 0's alone, marked with their n
    both = json.loads((tmp_path / "out" / "table.json").read_text())  # the 2-seed run's cells
    fewer = subprocess.run(
        [*cmd, "--control-seeds", "1"], capture_output=True, text=True, env=env, timeout=900
    )
    assert fewer.returncode == 0, fewer.stderr[-3000:]
    rows = {
        r.split(" | ")[0].strip("| "): r.split(" | ") for r in fewer.stdout.splitlines() if r.startswith("| ")
    }
    ctrl = next(r for r in both if r["name"] == "conv: untrained control")
    assert rows["conv: untrained control"][6] == f"{100 * ctrl['l10:semisup'][0]['test']:.2f} (n=1)"
    assert rows["conv"] == table[names.index("conv") + 1].split(" | ")  # pretrained rows keep 2 seeds
    assert "  head-" not in fewer.stdout  # seed 0's cells came from the cache
    # --from-seed 1: only seed 1 of every budget cell, from the cache (a second process's share)
    later = subprocess.run([*cmd, "--from-seed", "1"], capture_output=True, text=True, env=env, timeout=900)
    assert later.returncode == 0, later.stderr[-3000:]
    conv_later = next(r for r in later.stdout.splitlines() if r.startswith("| conv |")).split(" | ")
    conv_both = next(r for r in both if r["name"] == "conv")
    assert conv_later[6] == f"{100 * conv_both['l10:semisup'][1]['test']:.2f} (n=1)"
    seed1 = f"conv / 100 labels semisup, seed 1: test {100 * conv_both['l10:semisup'][1]['test']:.2f},"
    assert seed1 in later.stdout and "semisup, seed 0:" not in later.stdout  # labelled with its seed
    assert "  head-" not in later.stdout


def test_the_cache_key_follows_the_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Editing any module changes the key of head cells; editing a head-only module keeps the key
    of encoder cells (pretraining never runs it), editing any other module changes it too."""
    sys.path.insert(0, str(REPO))
    from bench import quality

    shutil.copytree(REPO / "src", tmp_path / "src")
    monkeypatch.setattr(quality, "REPO", tmp_path)
    before = {part: quality.code_hash(part) for part in (True, False)}

    semisup = tmp_path / "src/aepipe/training/semisup.py"
    semisup.write_text(semisup.read_text() + "\n# edited\n")
    after_head = {part: quality.code_hash(part) for part in (True, False)}
    assert after_head[True] == before[True] and after_head[False] != before[False]

    backbone = tmp_path / "src/aepipe/models/backbone.py"
    backbone.write_text(backbone.read_text() + "\n# edited\n")
    after_model = {part: quality.code_hash(part) for part in (True, False)}
    assert after_model[True] != after_head[True] and after_model[False] != after_head[False]


def test_encoder_cells_are_keyed_by_the_params_pretraining_reads() -> None:
    """A head-only change keeps the key of an encoder cell (the bench reuses the pretrained
    encoder); a change to a param pretraining or extraction reads re-keys it; head cells key on
    every param."""
    sys.path.insert(0, str(REPO))
    from aepipe.config import parse_params
    from bench import quality

    bench = quality.Bench.__new__(quality.Bench)  # the key only: no prepared data needed
    bench.code, bench.data_hash = {"encoder": "e", "all": "a"}, "d"
    bench.encoder_params = quality.encoder_params()
    assert "pretrain" in bench.encoder_params and "classifier.labels_per_class" in bench.encoder_params
    base = parse_params({})

    def keys(change: dict[str, object]) -> tuple[str, str, str]:
        p = quality.with_overrides(base, change)
        return bench.key("pretrained", p, ""), bench.key("untrained", p, ""), bench.key("head-x", p, "w")

    before = keys({})
    for head_only in ({"classifier.finetune.max_epochs": 7}, {"classifier.semisup.threshold": 0.9}):
        after = keys(head_only)
        assert after[:2] == before[:2] and after[2] != before[2], head_only
    for read_by_pretraining in (
        {"pretrain.epochs": 3},
        {"model.width": 8},
        {"model.denoising.level": 0.5},
        {"classifier.labels_per_class": 10},  # the subset vae_joint pretrains with
        {"seed": 1},
        {"evaluate.batch_size": 64},  # extraction's
    ):
        after = keys(read_by_pretraining)
        assert after[0] != before[0] and after[2] != before[2], read_by_pretraining


def test_the_untrained_control_reads_only_params_an_encoder_cell_is_keyed_by(tmp_path: Path) -> None:
    """save_untrained is bench code, not a stage, so tests/test_dvc_params.py does not cover it."""
    sys.path.insert(0, str(REPO))
    from aepipe.config import parse_params
    from aepipe.stages import prepare
    from bench import quality
    from tests.param_reads import covered, recorded_reads

    params = parse_params({"model": {"width": 4}})
    prepare.run(params, tmp_path / "data")
    with recorded_reads(params) as reads:
        quality.save_untrained(params, tmp_path / "data", tmp_path / "ae")
    assert "model.width" in reads and "seed" in reads
    assert all(covered(k, quality.encoder_params()) for k in reads), reads


@pytest.mark.slow
def test_pretraining_and_extraction_never_import_the_head_only_modules(tmp_path: Path) -> None:
    """What lets encoder cells leave HEAD_ONLY out of their key: the bench's encoder cell (the
    pretrain and extract stages, and the untrained control) imports none of those modules."""
    sys.path.insert(0, str(REPO))
    from bench.quality import HEAD_ONLY

    script = f"""
import json, sys
from pathlib import Path
from aepipe.config import parse_params
from aepipe.stages import extract, prepare, pretrain
from bench.quality import save_untrained
root = Path({str(tmp_path)!r})
params = parse_params({{"pretrain": {{"epochs": 1}}, "model": {{"width": 4}}, "device": "cpu"}})
prepare.run(params, root / "data")
pretrain.run(params, root / "data", root / "ae", root / "p.json", root / "plots")
extract.run(params, root / "data", root / "ae", root / "features")
save_untrained(params, root / "data", root / "untrained")
print(json.dumps(sorted(m for m in sys.modules if m.startswith("aepipe"))))
"""
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin", "AEPIPE_PROGRESS": "0"}
    env["AEPIPE_CHECKPOINT_DIR"] = str(tmp_path / "ckpt")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    imported = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "aepipe.stages.pretrain" in imported and "aepipe.training.pretrain" in imported
    head_only = {"aepipe." + p.removesuffix(".py").replace("/", ".") for p in HEAD_ONLY}
    assert not imported & head_only, imported & head_only

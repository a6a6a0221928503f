"""The semisup head: its pieces (confidence mask, masked loss, EMA teacher, schedule), a run on
digits that beats the linear probe and saves the pair evaluate and the registry load, and
resume after SIGKILL to the same weights."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from aepipe.config import parse_params
from aepipe.models.io import FINETUNED, load_autoencoder, load_head, load_pair
from aepipe.stages import evaluate, extract, prepare, pretrain, train
from aepipe.training.semisup import (
    ClassBalance,
    Curriculum,
    confident,
    cosine,
    ema_update,
    masked_cross_entropy,
)
from tests.test_resume import run_cli, setup_run, weights


def test_the_confidence_mask_keeps_rows_at_or_above_the_threshold() -> None:
    probs = torch.tensor([[0.96, 0.04, 0.0], [0.5, 0.3, 0.2], [0.0, 0.05, 0.95], [0.1, 0.9, 0.0]])
    pseudo, conf, mask = confident(probs, 0.95)
    assert pseudo.tolist() == [0, 0, 2, 1]
    torch.testing.assert_close(conf, torch.tensor([0.96, 0.5, 0.95, 0.9]))
    assert mask.tolist() == [True, False, True, False]  # 0.95 itself counts
    assert confident(probs, 0.5)[2].tolist() == [True, True, True, True]


def test_masked_cross_entropy_averages_over_every_row_and_ignores_masked_out_ones() -> None:
    logits = torch.randn(4, 3, requires_grad=True)
    targets = torch.tensor([0, 1, 2, 0])
    mask = torch.tensor([True, False, True, False])
    loss = masked_cross_entropy(logits, targets, mask)
    expected = nn.functional.cross_entropy(logits[mask], targets[mask], reduction="sum") / 4
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert torch.all(logits.grad[~mask] == 0) and torch.all(logits.grad[mask].abs().sum(1) > 0)
    nothing = masked_cross_entropy(logits, targets, torch.zeros(4, dtype=torch.bool))
    assert float(nothing.detach()) == 0.0


def test_ema_update_moves_parameters_by_one_minus_decay_and_copies_buffers() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    teacher = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    student.train()(torch.randn(8, 3))  # gives the student running statistics of its own
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    for (name, t), s in zip(teacher.named_parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * before[name] + 0.1 * s)
    for (name, t), s in zip(teacher.named_buffers(), student.buffers(), strict=True):
        assert torch.equal(t, s), name
    ema_update(teacher, student, 0.0)  # decay 0: the teacher is the student
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        assert torch.equal(t, s)
    assert not any(p.grad is not None for p in teacher.parameters())


def test_distribution_alignment_lifts_the_class_the_model_under_predicts() -> None:
    """Labelled subset: classes equally frequent. The model gives class 2 little mass; after
    alignment class 2 gains confidence, rows still sum to 1, and the running mean moves by
    (1 - momentum) toward each batch's mean, starting from the labelled frequencies."""
    balance = ClassBalance(torch.tensor([5, 5, 5, 5]), momentum=0.5)
    torch.testing.assert_close(balance.running, torch.full((4,), 0.25))
    batch = torch.tensor([[0.7, 0.2, 0.05, 0.05], [0.2, 0.7, 0.05, 0.05], [0.45, 0.1, 0.4, 0.05]])
    aligned = balance.align(batch)
    torch.testing.assert_close(balance.running, 0.5 * torch.full((4,), 0.25) + 0.5 * batch.mean(0))
    torch.testing.assert_close(aligned.sum(1), torch.ones(3))
    assert aligned[2].argmax() == 2 and batch[2].argmax() == 0  # the under-predicted class wins row 3
    assert torch.all(aligned[:, 2] > batch[:, 2]) and torch.all(aligned[:, 0] < batch[:, 0])
    for _ in range(200):  # the same batch again and again: the running mean converges to its mean
        balance.align(batch)
    torch.testing.assert_close(balance.running, batch.mean(0))
    unchanged = ClassBalance(torch.tensor([1, 1, 1, 1]), momentum=0.5)  # predictions already balanced
    even = torch.tensor(
        [[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1], [0.1, 0.1, 0.1, 0.7]]
    )
    torch.testing.assert_close(unchanged.align(even), even)
    saved = nn.ModuleDict({"balance": balance}).state_dict()  # checkpointed with the models
    assert set(saved) == {"balance.running", "balance.target"}
    assert torch.equal(saved["balance.running"], balance.running)


def test_class_thresholds_are_lower_for_the_classes_learnt_less() -> None:
    """FlexMatch: nothing predicted yet -> every threshold 0 (warm-up); then class c's threshold
    is 0.9 x beta / (2 - beta), beta = its confident count / max(largest count, unpredicted)."""
    curriculum = Curriculum(n_unlabelled=10, n_classes=3, threshold=0.9)
    assert curriculum.thresholds().tolist() == [0.0, 0.0, 0.0]
    index = torch.arange(6)
    pseudo = torch.tensor([0, 0, 0, 1, 1, 2])
    conf = torch.tensor([0.95, 0.95, 0.95, 0.95, 0.5, 0.95])
    assert curriculum.mask(index, pseudo, conf).all()  # warm-up: every threshold was 0
    assert curriculum.predicted.tolist() == [0, 0, 0, 1, -1, 2, -1, -1, -1, -1]  # 0.5 < 0.9: not recorded
    beta = torch.tensor([3, 1, 1]) / 5  # 5 images still unpredicted > the largest count, 3
    torch.testing.assert_close(curriculum.thresholds(), 0.9 * beta / (2 - beta))
    # every image predicted (counts 6, 2, 2): beta = 1, 1/3, 1/3; the most learnt class gets 0.9
    curriculum.mask(torch.arange(10), torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2]), torch.full((10,), 0.99))
    torch.testing.assert_close(curriculum.thresholds(), 0.9 * torch.tensor([1.0, 0.2, 0.2]))
    keep = curriculum.mask(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([0.8, 0.8]))
    assert keep.tolist() == [False, True]  # 0.8 passes the less-learnt class 1's threshold only
    assert curriculum.predicted[:2].tolist() == [0, 0]  # below 0.9: the record is unchanged


def test_the_learning_rate_follows_half_a_cosine_over_the_run() -> None:
    assert cosine(0, 100) == 1.0 and cosine(100, 100) == pytest.approx(0.0, abs=1e-12)
    assert cosine(50, 100) == pytest.approx(0.5)
    assert cosine(150, 100) == pytest.approx(0.0, abs=1e-12)  # past the end: stays at 0
    assert math.isclose(cosine(25, 100), 0.5 * (1 + math.cos(math.pi / 4)))


def test_params_refuse_bad_semisup_options() -> None:
    from aepipe.errors import ConfigError

    with pytest.raises(ConfigError, match=r"classifier\.semisup\.threshold"):
        parse_params({"classifier": {"semisup": {"threshold": 1.5}}})
    with pytest.raises(ConfigError, match=r"classifier\.semisup\.augment\.rotat: unknown key"):
        parse_params({"classifier": {"semisup": {"augment": {"rotat": 10}}}})
    with pytest.raises(ConfigError, match=r"classifier\.semisup\.pseudo_labels"):
        parse_params({"classifier": {"semisup": {"pseudo_labels": "oracle"}}})


def test_head_auto_picks_semisup_with_few_labels_and_the_probe_otherwise() -> None:
    from pipelines.aepipe_pipeline import gpu_stages

    def resolved(**classifier: object) -> str:
        return parse_params({"classifier": classifier}).classifier.resolved_head

    assert parse_params({}).classifier.head == "auto"
    assert resolved() == "linear"  # all labels
    assert resolved(labels_per_class=10) == resolved(labels_per_class=100) == "semisup"
    assert resolved(labels_per_class=101) == "linear"
    assert resolved(labels_per_class=500, auto_semisup_up_to=500) == "semisup"
    assert resolved(head="finetune", labels_per_class=10) == "finetune"  # a named head is kept
    # the Kubeflow train task gets a GPU when auto resolves to a head that trains the encoder
    assert "train" in gpu_stages(parse_params({"classifier": {"labels_per_class": 10}}))
    assert "train" not in gpu_stages(parse_params({}))


FAST = {"max_epochs": 6, "steps_per_epoch": 15, "patience": 6, "batch_size": 16}
TINY = {"pretrain": {"epochs": 3}, "model": {"name": "conv", "width": 8}, "device": "cpu"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("semisup")
    params = parse_params(TINY)
    prepare.run(params, root / "data")
    pretrain.run(params, root / "data", root / "ae", root / "pretrain.json", root / "plots")
    extract.run(params, root / "data", root / "ae", root / "features")
    return root


def train_and_evaluate(root: Path, out: Path, head: str) -> tuple[dict, dict]:
    params = parse_params({**TINY, "classifier": {"head": head, "labels_per_class": 5, "semisup": FAST}})
    res = train.run(
        params, root / "data", root / "features", root / "ae", out / "clf", out / "train.json", out / "plots"
    )
    metrics = evaluate.run(params, root / "data", root / "ae", out / "clf", out / "eval.json", out / "plots")
    return res, metrics


@pytest.mark.slow
def test_semisup_trains_the_encoder_saves_the_teacher_pair_and_beats_the_probe(
    pretrained: Path, tmp_path: Path
) -> None:
    probe, probe_eval = train_and_evaluate(pretrained, tmp_path / "linear", "linear")
    res, metrics = train_and_evaluate(pretrained, tmp_path / "semisup", "semisup")
    assert res["labels_used"] == probe["labels_used"] == 50
    assert res["probe_val_accuracy"] == pytest.approx(probe["val_accuracy"])  # it starts from the probe
    assert res["val_accuracy"] > probe["val_accuracy"]
    assert metrics["test_accuracy"] > probe_eval["test_accuracy"], (metrics, probe_eval)

    clf = tmp_path / "semisup" / "clf"
    _, spec = load_head(clf)
    assert spec["head"] == "semisup" and spec["finetuned_encoder"] is True
    tuned, original = (
        load_autoencoder(clf / FINETUNED).state_dict(),
        load_autoencoder(pretrained / "ae").state_dict(),
    )
    assert any(not torch.equal(tuned[k], original[k]) for k in original)  # the encoder trained
    pair, _ = load_pair(pretrained / "ae", clf)
    assert pair.autoencoder.state_dict().keys() == tuned.keys()
    assert all(torch.equal(pair.autoencoder.state_dict()[k], tuned[k]) for k in tuned)

    rows = [json.loads(json.dumps(r)) for r in res_curve(tmp_path / "semisup")]
    assert len(rows) == res["epochs_run"] and res["steps_run"] == res["epochs_run"] * FAST["steps_per_epoch"]
    assert all(0.0 <= float(r["mask_rate"]) <= 1.0 for r in rows)
    assert float(rows[-1]["mask_rate"]) > 0.2  # pseudo-labels did pass the threshold
    assert float(max(rows, key=lambda r: float(r["val_accuracy"]))["val_accuracy"]) == pytest.approx(
        res["val_accuracy"]
    )


def test_semisup_never_learns_from_the_true_labels_of_unlabelled_images(
    pretrained: Path, tmp_path: Path
) -> None:
    """The head reads every training label, for the pseudo-label diagnostics only: a copy of the
    data whose unlabelled training rows all carry another class (c -> c + 1; the labelled subset
    and the validation split unchanged) trains to the same weights, curve and validation
    accuracy; only the diagnostics see the difference."""
    import shutil

    import numpy as np

    from aepipe.data.prepared import load_prepared
    from aepipe.data.splits import labelled_subset
    from aepipe.stages.extract import load_features
    from aepipe.training.device import seed_everything
    from aepipe.training.fit import FitResult, HeadData
    from aepipe.training.trainers import TRAINERS

    schedule = {**FAST, "max_epochs": 2, "steps_per_epoch": 3, "batch_size": 8, "threshold": 0.5}
    params = parse_params(
        {**TINY, "classifier": {"head": "semisup", "labels_per_class": 5, "semisup": schedule}}
    )
    ds = load_prepared(pretrained / "data")
    y_train, y_val = ds.split("train")[1], ds.split("val")[1]
    picked = labelled_subset(y_train, 5, params.seed)  # the subset train.run picks
    unlabelled = np.setdiff1d(np.arange(len(y_train)), picked)
    relabelled = tmp_path / "relabelled"
    shutil.copytree(pretrained / "data", relabelled)
    y = np.load(relabelled / "y.npy")
    rows = ds.splits["train"][unlabelled]
    y[rows] = (y[rows] + 1) % len(ds.classes)
    np.save(relabelled / "y.npy", y)
    other = load_prepared(relabelled)
    assert np.array_equal(other.split("train")[1][picked], y_train[picked])
    assert np.array_equal(other.split("val")[1], y_val)
    assert np.all(other.split("train")[1][unlabelled] != y_train[unlabelled])

    f_train = load_features(pretrained / "features", "train", len(y_train))[picked]
    f_val = load_features(pretrained / "features", "val", len(y_val))

    def fit(data_dir: Path) -> FitResult:  # what train.run does, the labelled subset held fixed
        seed_everything(params.seed)
        return TRAINERS["semisup"](
            HeadData(
                f_train,
                y_train[picked],
                f_val,
                y_val,
                n_classes=len(ds.classes),
                cfg=params.classifier,
                seed=params.seed,
                data_dir=data_dir,
                model_dir=pretrained / "ae",
                picked=picked,
            )
        )

    a, b = fit(pretrained / "data"), fit(relabelled)
    assert a.val_accuracy == b.val_accuracy
    for part in ("module", "autoencoder"):
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa), part
    diagnostics = ("pseudo_label_accuracy", "wrong_pseudo_label_confidence")
    assert [{k: v for k, v in r.items() if k not in diagnostics} for r in a.curve] == [
        {k: v for k, v in r.items() if k not in diagnostics} for r in b.curve
    ]
    # not vacuous: pseudo-labels passed the threshold and the diagnostics read the relabelled data
    pairs = zip(a.curve, b.curve, strict=True)
    assert all(ra["pseudo_label_accuracy"] > rb["pseudo_label_accuracy"] for ra, rb in pairs)


def res_curve(out: Path) -> list[dict[str, str]]:
    import csv

    with open(out / "plots" / "train_curve.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_killed_semisup_training_resumes_to_the_uninterrupted_result(pretrained: Path) -> None:
    head = {
        **TINY,
        "classifier": {
            "head": "semisup",
            "labels_per_class": 5,
            "semisup": {**FAST, "max_epochs": 3, "steps_per_epoch": 8},
        },
    }
    args = [
        "train",
        "--data",
        str(pretrained / "data"),
        "--features",
        str(pretrained / "features"),
        "--model",
        str(pretrained / "ae"),
        "--out",
        "clf",
        "--metrics",
        "train.json",
        "--plots",
        "plots",
    ]
    straight = setup_run(pretrained, "semisup-straight", head)
    run_cli(args, straight)
    killed = setup_run(pretrained, "semisup-killed", head)
    run_cli(args, killed, kill_after_checkpoint=True)
    assert not (killed / "train.json").exists()
    result = json.loads(run_cli([*args, "--json"], killed).stdout)
    assert result["resumed_from_epoch"] >= 1
    assert (killed / "train.json").read_text() == (straight / "train.json").read_text()
    assert (killed / "plots/train_curve.csv").read_text() == (straight / "plots/train_curve.csv").read_text()
    for part in ("clf/weights.pt", "clf/autoencoder/weights.pt"):
        a, b = weights(straight / part), weights(killed / part)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part


@pytest.mark.slow
def test_dvc_repro_with_the_semisup_head_beats_the_probe_and_registers_the_pair(
    repo_copy: Path, tracking_env: str
) -> None:
    """`dvc repro` on digits with 5 labels per class: the semisup head, then the linear probe on
    the same labels and encoder (only train, evaluate and register re-run); the registered
    semisup model (its fine-tuned encoder inside) predicts what evaluate scored."""
    import subprocess

    import mlflow
    import numpy as np

    from aepipe.data.prepared import load_prepared
    from tests.test_dvc_pipeline import STAGES, dvc, ran, set_params

    set_params(
        repo_copy,
        model={"name": "conv", "width": 8},
        pretrain={"epochs": 3},
        classifier={"head": "semisup", "labels_per_class": 5, "semisup": FAST},
        mlflow={"experiment": "semisup-e2e", "model_name": "semisup-e2e"},
    )
    subprocess.run(["git", "commit", "-qam", "semisup params"], cwd=repo_copy, check=True)
    assert ran(dvc(repo_copy, "repro")) == STAGES
    semisup = json.loads((repo_copy / "metrics/eval.json").read_text())
    assert (repo_copy / "models/classifier" / FINETUNED / "weights.pt").is_file()

    model = mlflow.pyfunc.load_model("models:/semisup-e2e@challenger")
    ds = load_prepared(repo_copy / "data/prepared")
    x_test, y_test = ds.split("test")
    pred = model.predict(np.ascontiguousarray(x_test))["class_index"].to_numpy()
    assert float((pred == y_test).mean()) == pytest.approx(semisup["test_accuracy"], abs=1e-12)

    set_params(repo_copy, classifier={"head": "linear"})
    assert ran(dvc(repo_copy, "repro")) == ["train", "evaluate", "register"]
    linear = json.loads((repo_copy / "metrics/eval.json").read_text())
    print(
        f"digits, 50 labels: semisup {semisup['test_accuracy']:.4f}, linear probe "
        f"{linear['test_accuracy']:.4f}"
    )
    assert semisup["test_accuracy"] > linear["test_accuracy"]
    assert semisup["val_accuracy"] > linear["val_accuracy"]

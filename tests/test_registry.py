"""Best-pair selection, review pack, promotion gate, rollback and serving against a real
`mlflow server` (sqlite backend) on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from aepipe.cli import main
from aepipe.config import parse_params
from aepipe.data.prepared import load_prepared
from aepipe.stages import evaluate, extract, prepare, pretrain, train
from aepipe.stages.register import run_best
from aepipe.stages.runner import run_stage
from aepipe.tracking.promotion import promote, rollback
from tests.registry_world import SEMISUP
from tests.servers import MlflowServer, free_port

pytestmark = pytest.mark.slow
NAME = "review-digits"
LABELS = {"few": 1, "some": 3, "all": None}


def params_for(labels: int | None):
    return parse_params(
        {
            "pretrain": {"epochs": 2},
            "model": {"width": 8},
            "classifier": {"labels_per_class": labels, "semisup": SEMISUP},
            "mlflow": {"experiment": "review", "model_name": NAME},
        }
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mlflow_server: MlflowServer):
    """One pretrained encoder, three heads with different label budgets, all evaluated."""
    import mlflow

    root = tmp_path_factory.mktemp("review")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        base = params_for(None)
        prepare.run(base, root / "data")
        pretrain.run(base, root / "data", root / "ae", root / "m/pretrain.json", root / "plots")
        extract.run(base, root / "data", root / "ae", root / "features")
        heads = {}
        for key, labels in LABELS.items():
            p = params_for(labels)
            mdir = root / key / "metrics"
            mdir.mkdir(parents=True)
            (mdir / "pretrain.json").write_text((root / "m/pretrain.json").read_text())
            (root / key / "plots").mkdir(parents=True)
            for f in ("pretrain_loss.png", "pretrain_loss.csv"):
                (root / key / "plots" / f).write_bytes((root / "plots" / f).read_bytes())
            train.run(
                p,
                root / "data",
                root / "features",
                root / "ae",
                root / key / "clf",
                mdir / "train.json",
                root / key / "plots",
            )
            ev = evaluate.run(
                p, root / "data", root / "ae", root / key / "clf", mdir / "eval.json", root / key / "plots"
            )
            heads[key] = {
                "params": p,
                "metrics_dir": mdir,
                "clf": root / key / "clf",
                "plots": root / key / "plots",
                "eval": ev,
            }
        yield {"root": root, "heads": heads, "server": mlflow_server}
        mlflow.set_tracking_uri(None)


def register(world, key: str, select: str = "best") -> dict:
    h = world["heads"][key]
    return run_stage(
        "register",
        h["params"],
        data_dir=world["root"] / "data",
        model_dir=world["root"] / "ae",
        classifier_dir=h["clf"],
        metrics_dir=h["metrics_dir"],
        plots_dir=h["plots"],
        out_path=world["root"] / key / "registration.json",
        select=select,
    )


@pytest.fixture
def client(world, monkeypatch: pytest.MonkeyPatch):
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", world["server"].url)
    mlflow.set_tracking_uri(world["server"].url)
    yield MlflowClient(world["server"].url)
    mlflow.set_tracking_uri(None)


def test_selection_registers_best_validation_once(world, client) -> None:
    vals = {k: h["eval"]["val_accuracy"] for k, h in world["heads"].items()}
    assert vals["all"] > vals["few"]  # precondition: the label budgets really differ
    results = {k: register(world, k) for k in ("few", "all", "some")}
    assert results["few"]["created"] and results["few"]["this_run_selected"]
    assert results["all"]["created"] and results["all"]["this_run_selected"]
    best_key = max(vals, key=vals.get)
    assert results["some"]["this_run_selected"] == (best_key == "some")
    challenger = client.get_model_version_by_alias(NAME, "challenger")
    assert challenger.tags["aepipe.val_accuracy"] == f"{max(vals.values()):.6f}"
    n_versions = len(client.search_model_versions(f"name='{NAME}'"))

    # registering the same pair again (re-run, or --best twice) adds no version
    again = register(world, best_key)
    assert not again["created"] and again["version"] == str(challenger.version)
    data_hash = load_prepared(world["root"] / "data").meta["data_hash"]
    best = run_best(world["heads"]["all"]["params"], data_hash, world["root"] / "best.json")
    assert not best["created"] and best["version"] == str(challenger.version)
    # the same through the CLI: `aepipe register --best --data DIR` hashes the prepared data itself
    params_file = world["root"] / "best-params.yaml"
    params_file.write_text(yaml.safe_dump(world["heads"]["all"]["params"].model_dump(mode="json")))
    args = ["--params", str(params_file), "register", "--best", "--data", str(world["root"] / "data")]
    assert main([*args, "--out", str(world["root"] / "best-cli.json"), "--json"]) == 0
    cli_best = json.loads((world["root"] / "best-cli.json").read_text())
    assert not cli_best["created"] and cli_best["version"] == str(challenger.version)
    assert len(client.search_model_versions(f"name='{NAME}'")) == n_versions

    # the review pack on the source run and the version's description/tags, through the REST API
    url = world["server"].url
    got = requests.get(
        f"{url}/api/2.0/mlflow/model-versions/get",
        params={"name": NAME, "version": challenger.version},
        timeout=10,
    ).json()
    mv = got["model_version"]
    assert "test accuracy" in mv["description"] and "validation accuracy" in mv["description"]
    tags = {t["key"]: t["value"] for t in mv["tags"]}
    for key in (
        "aepipe.git_commit",
        "aepipe.data_hash",
        "aepipe.dataset",
        "aepipe.variant",
        "aepipe.head",
        "aepipe.labels_used",
    ):
        assert tags.get(key), key
    assert tags["aepipe.data_hash"] == data_hash and tags["aepipe.dataset"] == "digits"
    # whether pretraining used labels (README: vae_joint, the default here, does)
    uses_labels = "true" if tags["aepipe.variant"] == "vae_joint" else "false"
    assert tags.get("aepipe.pretrain_uses_labels") == uses_labels, tags
    arts = {a.path for a in client.list_artifacts(mv["run_id"], "review")}
    for name in (
        "model_card.md",
        "confusion.png",
        "reconstructions.png",
        "latent_projection.png",
        "misclassified.png",
        "pretrain_loss.png",
        "test_predictions.csv",
    ):
        assert f"review/{name}" in arts, arts
    card = Path(client.download_artifacts(mv["run_id"], "review/model_card.md")).read_text()
    assert "## Label efficiency" in card and "## Limitations" in card and "| 0 |" in card
    # the card tells the truth: vae_joint (the default) pretrains WITH labels; only its options
    assert "vae_joint** autoencoder, pretrained on the training split WITH labels" in card
    assert "`model.vae_joint.lam`" in card and "model.mae." not in card and "classifier.mlp." not in card
    # the version's source run and its LoggedModel hold the effective params and the metrics
    source = client.get_run(mv["run_id"])
    assert source.data.params["model.name"] == "vae_joint" and "model.vae.beta" not in source.data.params
    head, labels = tags["aepipe.head"], world["heads"][best_key]["params"].classifier.labels_per_class
    assert source.info.run_name == f"register vae_joint+{head} labels={'all' if labels is None else labels}"
    assert {"test_accuracy", "val_accuracy", "val_loss"} <= set(source.data.metrics)
    logged = client.get_logged_model(source.data.tags["aepipe.candidate_model_id"])
    assert logged.params["model.name"] == "vae_joint"
    assert {"test_accuracy", "val_loss"} <= {m.key for m in logged.metrics}
    root_arts = {a.path for a in client.list_artifacts(mv["run_id"])}
    assert {"confusion.png", "misclassified.png", "model_card.md"} <= root_arts, root_arts

    # the encoder is registered on its own and yields features
    import mlflow

    enc = client.get_model_version_by_alias(f"{NAME}-encoder", "challenger")
    feats = mlflow.pyfunc.load_model(f"models:/{NAME}-encoder/{enc.version}").predict(
        load_prepared(world["root"] / "data").split("test")[0][:4]
    )
    assert feats.shape[0] == 4 and feats.shape[1] > 8


def test_promotion_gate_force_and_rollback(world, client) -> None:
    name = NAME + "-gate"
    metric = "test_accuracy"
    tests = {k: h["eval"][metric] for k, h in world["heads"].items()}
    worst, best = min(tests, key=tests.get), max(tests, key=tests.get)
    assert tests[best] > tests[worst]

    def reg(key: str) -> str:
        h = world["heads"][key]
        p = h["params"].model_copy(
            update={"mlflow": h["params"].mlflow.model_copy(update={"model_name": name})}
        )
        return run_stage(
            "register",
            p,
            data_dir=world["root"] / "data",
            model_dir=world["root"] / "ae",
            classifier_dir=h["clf"],
            metrics_dir=h["metrics_dir"],
            plots_dir=h["plots"],
            out_path=world["root"] / "gate.json",
            select="current",
        )["version"]

    v_worst = reg(worst)
    first = promote(client, name, metric, 0.0)
    assert first.promoted and first.version == v_worst and first.previous is None

    v_best = reg(best)
    assert str(client.get_model_version_by_alias(name, "challenger").version) == v_best
    # a margin the challenger cannot meet: refused, with both numbers in the message
    too_high = promote(client, name, metric, margin=1.0)
    assert (
        not too_high.promoted
        and f"{tests[best]:.4f}" in too_high.message
        and f"{tests[worst]:.4f}" in too_high.message
    )
    ok = promote(client, name, metric, margin=0.0)
    assert ok.promoted and ok.version == v_best and ok.previous == v_worst
    assert str(client.get_model_version_by_alias(name, "previous-champion").version) == v_worst
    promoted = client.get_model_version(name, v_best)
    assert promoted.tags["aepipe.previous_champion"] == v_worst and promoted.tags["aepipe.promoted_at"]

    # the worse version back as challenger: the gate refuses it ...
    refused = promote(client, name, metric, 0.0, version=v_worst)
    assert not refused.promoted and "refused" in refused.message
    assert str(client.get_model_version_by_alias(name, "champion").version) == v_best
    # ... force needs a reason, and records it
    with pytest.raises(Exception, match="--reason"):
        promote(client, name, metric, 0.0, version=v_worst, force=True)
    forced = promote(
        client, name, metric, 0.0, version=v_worst, force=True, reason="incident 42: revert to known model"
    )
    assert forced.promoted
    tags = client.get_model_version(name, v_worst).tags
    assert tags["aepipe.promotion_forced"] == "true" and tags["aepipe.promotion_reason"].startswith(
        "incident 42"
    )
    assert tags["aepipe.promoted_by"]

    # rollback gives the champion back to the previous one, then one step further back
    back = rollback(client, name)
    assert (
        back.version == v_best and str(client.get_model_version_by_alias(name, "champion").version) == v_best
    )
    assert str(client.get_model_version_by_alias(name, "previous-champion").version) == v_worst


def test_cli_promote_refusal_exit_code_and_predict(
    world, client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(f"mlflow:\n  model_name: {NAME}\n  experiment: review\n")
    champion_before = None
    with contextlib.suppress(Exception):
        champion_before = client.get_model_version_by_alias(NAME, "champion")
    if champion_before is None:
        assert main(["promote"]) == 0
        # right after: no challenger, and promote says what the last registration did
        capsys.readouterr()
        assert main(["promote"]) == 2
        err = capsys.readouterr().err
        assert "no 'challenger' alias: the last registration" in err and "run the pipeline" not in err, err
    capsys.readouterr()
    assert main(["status"]) == 0
    shown = capsys.readouterr().out
    assert f"{NAME}: " in shown and "champion -> v" in shown and f"{NAME}-encoder: " in shown, shown
    ds = load_prepared(world["root"] / "data")
    x, _ = ds.split("test")
    for i in range(3):
        Image.fromarray(x[i, 0]).save(tmp_path / f"img{i}.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    capsys.readouterr()
    assert (
        main(["predict", "--json", "--model", f"models:/{NAME}@champion", "img0.png", "img1.png", "img2.png"])
        == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == ["img0.png", "img1.png", "img2.png"]
    assert all(abs(sum(r["probabilities"]) - 1) < 1e-4 for r in rows)
    # the same model through its run (runs:/<register run>/model) answers the same
    run_id = client.get_model_version_by_alias(NAME, "champion").run_id
    assert (
        main(["predict", "--json", "--model", f"runs:/{run_id}/model", "img0.png", "img1.png", "img2.png"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == rows
    assert main(["predict", "--model", f"models:/{NAME}@champion", "broken.png"]) == 2
    assert "broken.png: cannot be decoded as an image" in capsys.readouterr().err


def test_served_model_answers_like_in_process(world, client) -> None:
    import mlflow

    try:
        client.get_model_version_by_alias(NAME, "champion")
    except Exception:
        promote(client, NAME, "test_accuracy", 0.0)
    x = load_prepared(world["root"] / "data").split("test")[0][:16]
    local = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").predict(np.ascontiguousarray(x))
    port = free_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": world["server"].url,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        f"models:/{NAME}@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    log = world["root"] / "serve.log"
    with open(log, "wb") as out:  # the server holds its own descriptor
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.5)
        else:
            pytest.fail(f"mlflow models serve did not come up:\n{log.read_text()[-3000:]}")
        r = requests.post(f"http://127.0.0.1:{port}/invocations", json={"inputs": x.tolist()}, timeout=60)
        assert r.status_code == 200, r.text
        served = r.json()["predictions"]
        assert [p["class_index"] for p in served] == local["class_index"].tolist()
        np.testing.assert_allclose(
            [p["probabilities"] for p in served], np.stack(local["probabilities"].to_numpy()), rtol=1e-6
        )
        bad = requests.post(
            f"http://127.0.0.1:{port}/invocations", json={"inputs": x[:, 0].tolist()}, timeout=60
        )
        assert bad.status_code == 400  # the signature wants N×1×8×8
    finally:
        os.killpg(os.getpgid(proc.pid), 15)
        proc.wait(timeout=20)


def test_new_classifier_on_a_registered_encoder(world, client, tmp_path: Path) -> None:
    import torch

    from aepipe.errors import ConfigError, ModelError
    from aepipe.models.io import load_autoencoder

    uri = f"models:/{NAME}-encoder@champion"  # the README's promise: it follows `aepipe promote`
    p = parse_params(
        {
            "pretrain": {"epochs": 0, "init_from": uri},
            "model": {"width": 8},
            "classifier": {"labels_per_class": 3, "semisup": SEMISUP},
        }
    )
    result = pretrain.run(
        p, world["root"] / "data", tmp_path / "ae", tmp_path / "pretrain.json", tmp_path / "plots"
    )
    champion = client.get_model_version_by_alias(NAME, "champion")
    enc_version = client.get_model_version_by_alias(f"{NAME}-encoder", "champion").version
    assert champion.tags["aepipe.encoder_version"] == str(enc_version)
    assert result["init_from"] == f"models:/{NAME}-encoder/{enc_version}"
    reused, original = load_autoencoder(tmp_path / "ae"), load_autoencoder(world["root"] / "ae")
    x = torch.rand(4, 1, 8, 8)
    with torch.inference_mode():
        torch.testing.assert_close(reused.features(x), original.features(x), rtol=0, atol=0)
    extract.run(p, world["root"] / "data", tmp_path / "ae", tmp_path / "features")
    trained = train.run(
        p,
        world["root"] / "data",
        tmp_path / "features",
        tmp_path / "ae",
        tmp_path / "clf",
        tmp_path / "train.json",
        tmp_path,
    )
    assert trained["labels_used"] == 30 and trained["val_accuracy"] > 0.5

    with pytest.raises(ConfigError, match=r"epochs: 0 needs pretrain\.init_from"):
        parse_params({"pretrain": {"epochs": 0}})
    wrong = parse_params(
        {"pretrain": {"epochs": 0, "init_from": uri}, "data": {"source": "digits"}, "model": {"depth": 1}}
    )
    with pytest.raises(ModelError, match="init_from"):
        # a variant the registry knows but the encoder is not
        pretrain.run(
            wrong.model_copy(update={"model": wrong.model.model_copy(update={"name": "nope"})}),
            world["root"] / "data",
            tmp_path / "x",
            tmp_path / "x.json",
            tmp_path,
        )

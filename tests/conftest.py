from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.servers import MlflowServer

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("AEPIPE_PROGRESS", "0")
# Stage checkpoints of in-process tests go to a temp dir, never into the checkout's .aepipe/.
os.environ.setdefault("AEPIPE_CHECKPOINT_DIR", tempfile.mkdtemp(prefix="aepipe-test-checkpoints-"))
os.environ.setdefault("GIT_AUTHOR_NAME", "aepipe-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@aepipe.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "aepipe-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@aepipe.invalid")
# The unit tests' models are tiny: one thread is faster, and on a loaded machine two OpenMP
# threads spin-waiting for each other made the suite 2x slower (58 s vs 130 s on 2 shared cores).
torch.set_num_threads(1)
# The same for the stages the tests run as subprocesses (aepipe, dvc repro, kfp.local tasks): the suite
# runs in two pytest-xdist workers on two cores, so one thread per process keeps the cores busy
# without oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow")).start()
    yield server
    server.stop()


@pytest.fixture
def tracking_env(mlflow_server: MlflowServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's MLflow calls (and its subprocesses) at the real server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    mlflow.set_tracking_uri(mlflow_server.url)
    yield mlflow_server.url
    mlflow.set_tracking_uri(None)


def copy_repo(dest: Path) -> Path:
    """The working tree as git sees it (tracked + untracked-not-ignored), committed in a fresh repo."""
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for f in ("dvc.lock",):  # a fresh run must not start from this checkout's lock
        (dest / f).unlink(missing_ok=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-qm", "test copy"], cwd=dest, check=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def toy_images(
    n_per_class: int = 12, classes: int = 3, size: int = 8, channels: int = 1, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Separable toy images: class k lights up a different band of rows."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(n_per_class * classes, channels, size, size), dtype=np.uint8)
    y = np.repeat(np.arange(classes), n_per_class)
    band = size // classes
    for i, label in enumerate(y):
        x[i, :, label * band : (label + 1) * band, :] = 220
    return x, y

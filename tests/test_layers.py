"""The layering of src/aepipe holds: no import cycle (lazy imports included), no library import of
the CLI, params validate without torch, and CONTRIBUTING.md's picture is the code's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "import_graph.py"


def run_tool(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = f"{pythonpath}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_the_import_graph_of_aepipe_has_no_cycle_and_no_library_import_of_the_cli() -> None:
    done = run_tool("--check")
    assert done.returncode == 0, done.stderr
    assert "no import cycle" in done.stdout


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_check_finds_a_cycle_closed_by_a_lazy_import_and_a_cli_import(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "cycpkg/__init__.py": "",
            "cycpkg/low.py": "def f():\n    from cycpkg.high import g  # lazy: still a cycle\n    return g\n",
            "cycpkg/high.py": "from cycpkg import low\n\ndef g():\n    return low\n",
            "cycpkg/cli.py": "",
            "cycpkg/sub/__init__.py": "",
            "cycpkg/sub/a.py": "import cycpkg.cli\n",
        },
    )
    done = run_tool("--check", "--package", "cycpkg", pythonpath=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "module cycle: " in done.stderr and "cycpkg.low" in done.stderr and "cycpkg.high" in done.stderr
    assert "library code imports the CLI: cycpkg.sub.a imports cycpkg.cli" in done.stderr


def test_the_check_finds_a_cycle_between_subpackages(tmp_path: Path) -> None:
    write_package(
        tmp_path,
        {
            "laypkg/__init__.py": "",
            "laypkg/models/__init__.py": "",
            "laypkg/models/a.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from laypkg.training import b\n"
            ),
            "laypkg/training/__init__.py": "",
            "laypkg/training/b.py": "import laypkg.models\n",
        },
    )
    done = run_tool("--check", "--package", "laypkg", pythonpath=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "layer cycle: models -> training -> models" in done.stderr


def test_contributing_shows_the_picture_the_code_draws() -> None:
    done = run_tool()
    assert done.returncode == 0, done.stderr
    picture = done.stdout.strip()
    text = (REPO / "CONTRIBUTING.md").read_text()
    assert picture in text, (
        "CONTRIBUTING.md's layer picture is out of date; replace it with the output of "
        f"`python tools/import_graph.py`:\n{picture}"
    )


def test_params_validate_without_importing_torch() -> None:
    code = (
        "import sys\n"
        "from aepipe.config import load_params\n"
        "params = load_params('params.yaml')\n"
        "params.model.options()\n"
        "heavy = sorted(m for m in ('torch', 'mlflow', 'sklearn', 'kfp') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
        "print(params.model.name)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()


def test_the_torch_free_names_are_those_of_the_modules() -> None:
    from aepipe.models import REGISTRY
    from aepipe.models.heads import HEADS
    from aepipe.options import HEAD_NAMES, VARIANT_OPTIONS
    from aepipe.training.trainers import TRAINERS

    assert set(REGISTRY) == set(VARIANT_OPTIONS)
    assert all(REGISTRY[name].config is VARIANT_OPTIONS[name] for name in REGISTRY)
    assert set(HEADS) == set(HEAD_NAMES) == set(TRAINERS)


def test_the_runner_treats_every_stage_alike() -> None:
    """No stage is named in the runner: what differs is declared by the stage (DATA_PARALLEL),
    by its result (PARENT_TAGS, PARENT_METRICS), or by its place in STAGES (the last closes)."""
    import ast

    from aepipe.stages import STAGES

    tree = ast.parse((REPO / "src" / "aepipe" / "stages" / "runner.py").read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value in STAGES}
    assert not named, f"runner.py special-cases {sorted(named)}"


def test_register_without_an_mlflow_run_is_refused_before_reading_anything(tmp_path: Path) -> None:
    import pytest

    from aepipe.config import load_params
    from aepipe.errors import TrackingError
    from aepipe.stages import register

    with pytest.raises(TrackingError, match="needs an MLflow run; got NullTracker"):
        register.run(
            load_params(REPO / "params.yaml"),
            data_dir=tmp_path / "absent",
            model_dir=tmp_path,
            classifier_dir=tmp_path,
            metrics_dir=tmp_path,
            out_path=tmp_path / "registration.json",
        )
    assert not (tmp_path / "registration.json").exists()


def test_the_promotion_exit_code_comes_from_the_outcome_not_the_message() -> None:
    from aepipe.tracking.promotion import EXIT_CODES, Decision

    assert Decision("refused", "2", "1", "any text").exit_code == 1
    assert Decision("already_champion", "2", None, "refused: looks like a refusal").exit_code == 0
    assert set(EXIT_CODES) == {"promoted", "rolled_back", "already_champion", "refused"}
    assert Decision("rolled_back", "1", "2", "").promoted and not Decision("refused", "2", "1", "").promoted

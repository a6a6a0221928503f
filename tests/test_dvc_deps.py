"""dvc.yaml tells the truth: each stage depends on exactly the code it may run, and keeps its
outputs in place when it fails (persist), so `dvc repro` re-runs what changed and nothing is lost."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aepipe.stages import STAGES
from tests.import_closure import SRC, closure, dynamic_imports

REPO = SRC.parent
DVC = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
# register logs the package itself into the registered MLflow model (code_paths=[aepipe/]), so
# every file of it is part of that output.
SHIPS_PACKAGE = {"register"}
# Every importlib.import_module call site, and why the closure can ignore or already covers it.
KNOWN_DYNAMIC = {
    "src/aepipe/stages/runner.py": "imports aepipe.stages.<stage>: the root of each closure",
    "src/aepipe/pipeline_cli.py": (
        "imports the repo's pipelines/ package for `aepipe pipeline`, never a stage"
    ),
}


def package_files(under: Path) -> set[Path]:
    root = REPO / under
    if root.is_file():
        return {under} if under.suffix == ".py" else set()
    return {p.relative_to(REPO) for p in root.rglob("*.py") if "__pycache__" not in p.parts}


def code_deps(stage: str) -> list[Path]:
    return [Path(d) for d in DVC[stage]["deps"] if str(d).startswith("src/")]


def test_every_stage_of_the_package_is_a_dvc_stage_running_its_cli_on_the_paths_of_aepipe_paths() -> None:
    from aepipe import paths

    assert list(DVC) == list(STAGES)
    for stage, spec in DVC.items():
        assert spec["cmd"] == paths.command(stage), (
            f"dvc.yaml: stage {stage} runs {spec['cmd']!r} but aepipe.paths says {paths.command(stage)!r}; "
            "stage paths live in src/aepipe/paths.py: change them there and in dvc.yaml together"
        )


@pytest.mark.parametrize("stage", STAGES)
def test_code_deps_are_the_import_closure_of_the_stage(stage: str) -> None:
    expected = (
        package_files(Path("src/aepipe")) if stage in SHIPS_PACKAGE else closure(f"aepipe.stages.{stage}")
    )
    deps = code_deps(stage)
    for dep in deps:
        assert (REPO / dep).exists(), f"dvc.yaml: stage {stage} depends on {dep}, which does not exist"
    covered = set().union(*(package_files(d) for d in deps)) if deps else set()
    missing = sorted(map(str, expected - covered))
    assert not missing, (
        f"dvc.yaml: stage {stage} runs code it does not depend on (an edit there would leave its "
        f"outputs stale); add to its deps: {missing}"
    )
    # a directory dep must be wholly in the closure, and no file dep may be outside it: either
    # would re-run the stage (pretrain: minutes) for an edit that cannot change its outputs
    extra = sorted(map(str, covered - expected))
    assert not extra, (
        f"dvc.yaml: stage {stage} depends on code it never imports; list the needed files instead "
        f"of a directory, or drop: {extra}"
    )


def test_every_dynamic_import_is_accounted_for() -> None:
    assert dynamic_imports() == set(KNOWN_DYNAMIC), (
        "a new importlib.import_module call site: teach tests/import_closure.py what it imports "
        "(or why no stage runs it) and add it to KNOWN_DYNAMIC"
    )


def test_closure_follows_lazy_imports_and_the_head_trainers() -> None:
    train = closure("aepipe.stages.train")
    assert Path("src/aepipe/training/finetune.py") in train  # through aepipe.training.trainers
    assert Path("src/aepipe/training/heads.py") in train
    pretrain = closure("aepipe.stages.pretrain")
    assert Path("src/aepipe/tracking/reuse.py") in pretrain  # lazy: only with pretrain.init_from
    assert Path("src/aepipe/training/heads.py") not in pretrain  # config knows head names only
    assert Path("src/aepipe/config.py") in closure("aepipe.stages.prepare")
    assert Path("src/aepipe/plots.py") in closure("aepipe.stages.evaluate")


def test_every_output_persists_so_a_failed_run_keeps_the_previous_one() -> None:
    for stage, spec in DVC.items():
        for kind in ("outs", "metrics", "plots"):
            for out in spec.get(kind, []):
                path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
                assert options.get("persist") is True, f"dvc.yaml: {stage} {kind} {path} lacks persist: true"


@pytest.mark.parametrize("stage", STAGES)
def test_the_outputs_a_failure_message_reports_are_the_dvc_outputs(stage: str) -> None:
    from aepipe.cli import build_parser
    from aepipe.paths import STAGE_ARGS, default_paths
    from aepipe.stages.outputs import stage_outputs

    args = build_parser().parse_args([stage])  # the CLI's defaults are those of aepipe.paths
    paths = {dest: getattr(args, opt) for opt, (dest, _) in STAGE_ARGS[stage].items()}
    assert paths == default_paths(stage)
    declared = set()
    for kind in ("outs", "metrics", "plots"):
        for out in DVC[stage].get(kind, []):
            declared.add(out if isinstance(out, str) else next(iter(out)))
    assert {str(p) for p in stage_outputs(stage, paths)} == declared

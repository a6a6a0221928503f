"""What the Kubeflow path costs: `dvc repro` vs `aepipe pipeline local` on the same params, plus
the compiled YAML.

Both run as fresh processes in a copy of this working tree (tracked and untracked files that git
does not ignore, committed in a fresh repository), against one pre-initialised sqlite MLflow
store, so neither pays the store's creation. Prints one JSON object, then the last line

    RESULT dvc_repro_s=... kfp_local_s=... overhead_s=... kfp_over_dvc=... yaml_bytes=...
           dvc_test_accuracy=... kfp_test_accuracy=...

(one line; wrapped here)

    PYTHONPATH=src:. python bench/kfp_overhead.py                     # params.yaml as it is
    PYTHONPATH=src:. python bench/kfp_overhead.py -p pretrain.epochs=3 -p model.width=16
    PYTHONPATH=src:. python bench/kfp_overhead.py --smoke             # CI: a tiny model, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from aepipe.config import apply_overrides, load_params

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SMOKE = ["model.name=conv", "model.width=4", "model.depth=1", "pretrain.epochs=1"]


def copy_tree(dest: Path) -> None:
    """The working tree as git sees it, committed in a fresh repository (dvc wants one)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    )
    for rel in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "bench",
        "GIT_AUTHOR_EMAIL": "bench@aepipe.invalid",
        "GIT_COMMITTER_NAME": "bench",
        "GIT_COMMITTER_EMAIL": "bench@aepipe.invalid",
    }
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "bench copy"],
    ):
        subprocess.run(cmd, cwd=dest, env=env, check=True)


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--smoke", action="store_true", help=f"CI check: -p {' -p '.join(SMOKE)}")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    if args.smoke:
        args.param = SMOKE + args.param
    params = apply_overrides(load_params(REPO / "params.yaml"), args.param)

    tmp = Path(tempfile.mkdtemp(prefix="aepipe-bench-"))
    clone = tmp / "repo"
    clone.mkdir()
    copy_tree(clone)
    (clone / "dvc.lock").unlink(missing_ok=True)
    (clone / "params.yaml").write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": os.pathsep.join([str(clone / "src"), str(clone)]),
    }
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mlflow import MlflowClient; MlflowClient({uri!r}).search_experiments()",
        ],
        env=env,
        check=True,
    )

    dvc_s = timed([str(BIN / "dvc"), "repro", "-q"], clone, env)
    kfp_s = timed([str(BIN / "aepipe"), "pipeline", "local", "--pipeline-root", str(tmp / "kfp")], clone, env)
    compiled = tmp / "pipeline.yaml"
    timed([str(BIN / "aepipe"), "pipeline", "compile", "-o", str(compiled)], clone, env)
    spec = next(yaml.safe_load_all(compiled.read_text()))
    resources = {
        name.removeprefix("exec-"): {
            k: v
            for k, v in e["container"]["resources"].items()
            if k.startswith("resource") or k == "accelerator"
        }
        for name, e in spec["deploymentSpec"]["executors"].items()
    }
    dvc_acc = json.loads((clone / "metrics/eval.json").read_text())["test_accuracy"]
    (kfp_metrics,) = (tmp / "kfp").glob("*/evaluate/metrics")
    kfp_acc = json.loads(kfp_metrics.read_text())["test_accuracy"]
    result = {
        "dvc_repro_s": dvc_s,
        "kfp_local_s": kfp_s,
        "overhead_s": round(kfp_s - dvc_s, 1),
        "kfp_over_dvc": round(kfp_s / dvc_s, 2),
        "yaml_bytes": compiled.stat().st_size,
        "dvc_test_accuracy": dvc_acc,
        "kfp_test_accuracy": kfp_acc,
    }
    report = {
        "overrides": args.param,
        **result,
        "resources": resources,
        "load_average": os.getloadavg(),
        "workdir": str(tmp) if args.keep else None,
    }
    print(json.dumps(report, indent=2))
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()

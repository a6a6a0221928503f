"""What the Kubeflow path costs: `dvc repro` vs `aepipe pipeline local` on the same params, plus the compiled YAML.

Both run as fresh processes in a clone of this repository's HEAD (commit first), against one
pre-initialised sqlite MLflow store, so neither pays the store's creation. Prints one JSON object.

    PYTHONPATH=src:. python bench/kfp_overhead.py -p pretrain.epochs=3 -p model.width=16
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from aepipe.config import load_params
from aepipe.pipeline_cli import apply_overrides

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    params = apply_overrides(load_params(REPO / "params.yaml"), args.param)

    tmp = Path(tempfile.mkdtemp(prefix="aepipe-bench-"))
    clone = tmp / "repo"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
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
    print(
        json.dumps(
            {
                "overrides": args.param,
                "dvc_repro_s": dvc_s,
                "kfp_local_s": kfp_s,
                "overhead_s": round(kfp_s - dvc_s, 1),
                "dvc_test_accuracy": dvc_acc,
                "kfp_test_accuracy": json.loads(kfp_metrics.read_text())["test_accuracy"],
                "yaml_bytes": compiled.stat().st_size,
                "resources": resources,
                "load_average": os.getloadavg(),
                "workdir": str(tmp),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

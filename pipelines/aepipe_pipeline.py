"""The DAG prepare -> pretrain -> extract -> train -> evaluate -> register, built from validated params.

The pipeline is built per params, not once at import: the parameter ``params_json`` defaults to
the params it was built from (params.yaml plus any ``-p`` overrides), and which tasks get a GPU
follows ``classifier.head``. Cluster settings come from the ``kubeflow:`` section of params.yaml.
No ``from __future__ import annotations`` here: KFP reads the pipeline's annotations as types.
"""

from typing import Any, NamedTuple

from kfp import dsl, kubernetes
from kfp.dsl import Artifact, Metrics

from aepipe.config import KubeflowConfig, Params
from aepipe.kfp_support import params_to_json
from components import evaluate, extract, prepare, pretrain, pretrain_pytorchjob, register, train

PIPELINE_NAME = "aepipe"
FINETUNE_HEADS = ("finetune", "semisup")  # heads that train the encoder, so their train task is a GPU task


def gpu_stages(params: Params) -> set[str]:
    """Training tasks: pretrain always (unless a PyTorchJob trains it), train when the head fine-tunes the encoder."""
    stages = set() if params.kubeflow.pytorchjob.in_pipeline else {"pretrain"}
    if params.classifier.resolved_head in FINETUNE_HEADS:
        stages.add("train")
    return stages if params.kubeflow.accelerator_limit > 0 else set()


def configure(task: Any, stage: str, kf: KubeflowConfig, image: str, gpu: bool) -> Any:
    """Image, resources, secret env, security and (for training tasks) GPU, toleration, /dev/shm."""
    res = kf.task(stage)
    task.set_display_name(stage).set_container_image(image)
    task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu_limit or res.cpu)
    task.set_memory_request(res.memory).set_memory_limit(res.memory_limit or res.memory)
    kubernetes.use_secret_as_env(task, kf.secret, {key: key for key in kf.secret_env})
    kubernetes.set_security_context(
        task, run_as_user=kf.run_as_user, run_as_group=kf.run_as_user, run_as_non_root=True
    )
    if gpu:
        task.set_accelerator_type(kf.accelerator_type).set_accelerator_limit(kf.accelerator_limit)
        kubernetes.add_toleration(task, key=kf.gpu_toleration, operator="Exists", effect="NoSchedule")
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=kf.shm_size
        )
    if stage == "register":
        task.set_caching_options(
            enable_caching=False
        )  # every run must register (and finish its MLflow parent)
    return task


def build_pipeline(params: Params, image: str) -> Any:
    """A ``@dsl.pipeline`` whose ``params_json`` defaults to ``params``; compile it, submit it or run it locally."""
    kf = params.kubeflow
    gpu = gpu_stages(params)
    default_params = params_to_json(params)

    class Outputs(NamedTuple):
        metrics: Metrics
        registration: Artifact

    @dsl.pipeline(
        name=PIPELINE_NAME, description="Autoencoder pretraining -> features -> classifier -> MLflow registry"
    )
    def aepipe(params_json: str = default_params) -> Outputs:
        common = {"params_json": params_json, "execution_key": dsl.PIPELINE_JOB_ID_PLACEHOLDER}

        def step(component: Any, **inputs: Any) -> Any:
            name = component.component_spec.name
            return configure(component(**common, **inputs), name, kf, image, name in gpu)

        prep = step(prepare)
        data = prep.outputs["data"]
        if kf.pytorchjob.in_pipeline:
            # The task itself only launches and waits: the job's pods get the GPUs; it shares their volume.
            pre = step(pretrain_pytorchjob, data=data, image=image)
            kubernetes.mount_pvc(pre, pvc_name=kf.pytorchjob.volume_claim, mount_path=kf.pytorchjob.workdir)
        else:
            pre = step(pretrain, data=data)
        ae = pre.outputs["autoencoder"]
        feats = step(extract, data=data, autoencoder=ae).outputs["features"]
        tr = step(train, data=data, features=feats, autoencoder=ae)
        clf = tr.outputs["classifier"]
        ev = step(evaluate, data=data, autoencoder=ae, classifier=clf)
        reg = step(
            register,
            data=data,
            autoencoder=ae,
            classifier=clf,
            pretrain_metrics=pre.outputs["metrics"],
            train_metrics=tr.outputs["metrics"],
            eval_metrics=ev.outputs["metrics"],
            pretrain_plots=pre.outputs["plots"],
            evaluate_plots=ev.outputs["plots"],
        )
        return Outputs(metrics=ev.outputs["metrics"], registration=reg.outputs["registration"])

    return aepipe

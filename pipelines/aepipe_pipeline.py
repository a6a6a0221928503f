"""The DAG prepare -> pretrain -> extract -> train -> evaluate -> register, built from validated params.

The pipeline is built per params, not once at import: the parameter ``params_json`` defaults to
the params it was built from (params.yaml plus any ``-p`` overrides), and which tasks get a GPU
follows ``classifier.head``. Cluster settings come from the ``kubeflow:`` section of params.yaml.
The stages run inside a ``dsl.ExitHandler`` whose exit task (``finalize``) marks the MLflow run
FAILED when any of them fails; every task but ``register`` and ``finalize`` is retried
(``kubeflow.retries``). ``aepipe pipeline local`` runs this very DAG (kfp.local runs exit
handlers and retries too), so what runs locally is what a cluster gets.
No ``from __future__ import annotations`` here: KFP reads the pipeline's annotations as types.
"""

from typing import Any

from kfp import dsl, kubernetes

from aepipe.config import KubeflowConfig, Params, TaskResources
from aepipe.kfp_support import GPU_ENV, params_to_json
from aepipe.options import ENCODER_HEADS
from components import evaluate, extract, finalize, prepare, pretrain, pretrain_pytorchjob, register, train

PIPELINE_NAME = "aepipe"
EXIT_HANDLER = "stages"  # the group holding every stage (compiled as the sub-DAG exit-handler-1)
# A retry re-runs a task from its inputs, which is safe for every stage that only writes its own
# outputs (pretrain resumes from its checkpoint). register moves the challenger alias and ends the
# MLflow run: it never retries. finalize is the exit task.
NO_RETRY = ("register", "finalize")
NEVER_CACHED = ("register", "finalize")  # every run must register, and close its MLflow run
FINALIZE_RESOURCES = TaskResources(cpu="250m", memory="512Mi")


def gpu_stages(params: Params) -> set[str]:
    """Training tasks: pretrain always (unless a PyTorchJob trains it), train when the head
    fine-tunes the encoder."""
    stages = set() if params.kubeflow.pytorchjob.in_pipeline else {"pretrain"}
    if params.classifier.resolved_head in ENCODER_HEADS:  # the head trains the encoder: a GPU task
        stages.add("train")
    return stages if params.kubeflow.accelerator_limit > 0 else set()


def configure(
    task: Any, stage: str, kf: KubeflowConfig, image: str, gpu: bool, resources: TaskResources | None = None
) -> Any:
    """Image, resources, secret env, security, /tmp, retries and (training tasks) GPU, toleration,
    /dev/shm."""
    res = resources or kf.task(stage)
    task.set_display_name(stage).set_container_image(image)
    task.set_cpu_request(res.cpu).set_cpu_limit(res.cpu_limit or res.cpu)
    task.set_memory_request(res.memory).set_memory_limit(res.memory_limit or res.memory)
    kubernetes.use_secret_as_env(task, kf.secret, {key: key for key in kf.secret_env})
    kubernetes.set_security_context(
        task, run_as_user=kf.run_as_user, run_as_group=kf.run_as_user, run_as_non_root=True
    )
    # Everything a task writes besides its artifacts goes under /tmp (the image's HOME and caches):
    # an emptyDir there keeps tasks working on a read-only root filesystem.
    kubernetes.empty_dir_mount(task, volume_name="tmp", mount_path="/tmp")
    if gpu:
        task.set_accelerator_type(kf.accelerator_type).set_accelerator_limit(kf.accelerator_limit)
        task.set_env_variable(GPU_ENV, kf.accelerator_type)  # the task fails clearly if it sees no GPU
        kubernetes.add_toleration(task, key=kf.gpu_toleration, operator="Exists", effect="NoSchedule")
        kubernetes.empty_dir_mount(
            task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=kf.shm_size
        )
    if kf.retries and stage not in NO_RETRY:
        task.set_retry(
            num_retries=kf.retries, backoff_duration=f"{kf.retry_backoff_seconds}s", backoff_factor=2.0
        )
    if stage in NEVER_CACHED:
        task.set_caching_options(enable_caching=False)
    return task


def build_pipeline(params: Params, image: str) -> Any:
    """A ``@dsl.pipeline`` whose ``params_json`` defaults to ``params``; compile it, submit it or run
    it locally.

    It has no pipeline outputs (KFP allows none from inside an exit handler): evaluate's
    ``metrics`` and register's ``registration`` artifacts hold the results.
    """
    kf = params.kubeflow
    gpu = gpu_stages(params)
    default_params = params_to_json(params)

    @dsl.pipeline(
        name=PIPELINE_NAME, description="Autoencoder pretraining -> features -> classifier -> MLflow registry"
    )
    def aepipe(params_json: str = default_params):
        common = {"params_json": params_json, "execution_key": dsl.PIPELINE_JOB_ID_PLACEHOLDER}

        def step(component: Any, resources: TaskResources | None = None, **inputs: Any) -> Any:
            name = component.component_spec.name
            return configure(component(**common, **inputs), name, kf, image, name in gpu, resources)

        final = step(finalize, FINALIZE_RESOURCES)
        with dsl.ExitHandler(final, name=EXIT_HANDLER):
            prep = step(prepare)
            data = prep.outputs["data"]
            if kf.pytorchjob.in_pipeline:
                # The task only launches and waits: the job's pods get the GPUs; it shares their volume.
                pre = step(pretrain_pytorchjob, kf.pytorchjob.launcher, data=data, image=image)
                kubernetes.mount_pvc(
                    pre, pvc_name=kf.pytorchjob.volume_claim, mount_path=kf.pytorchjob.workdir
                )
            else:
                pre = step(pretrain, data=data)
            ae = pre.outputs["autoencoder"]
            feats = step(extract, data=data, autoencoder=ae).outputs["features"]
            tr = step(train, data=data, features=feats, autoencoder=ae)
            clf = tr.outputs["classifier"]
            ev = step(evaluate, data=data, autoencoder=ae, classifier=clf)
            step(
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

    return aepipe

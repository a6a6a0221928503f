"""prepare: the data source -> a prepared ``Dataset`` (x.npy, y.npy, splits.npz, meta.json)."""

from kfp import dsl
from kfp.dsl import Dataset, Metrics, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def prepare(params_json: str, execution_key: str, data: Output[Dataset], summary: Output[Metrics]):
    """Load data.source, split it stratified, write the prepared dataset directory."""
    from aepipe import kfp_support

    result = kfp_support.run_stage_json("prepare", params_json, execution_key, out_dir=data.path)
    kfp_support.log_scalars(
        summary, {f"n_{k}": v for k, v in result["counts"].items()} | {"classes": result["classes"]}
    )
    data.metadata["data_hash"] = result["data_hash"]

"""extract: frozen-encoder features of every split (train.npy, val.npy, test.npy)."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Model, Output

from aepipe.kfp_support import default_image


@dsl.component(base_image=default_image(), install_kfp_package=False)
def extract(
    params_json: str,
    execution_key: str,
    data: Input[Dataset],
    autoencoder: Input[Model],
    features: Output[Dataset],
):
    """Encode each split with the frozen encoder (eval mode)."""
    from aepipe import kfp_support

    result = kfp_support.run_stage_json(
        "extract",
        params_json,
        execution_key,
        data_dir=data.path,
        model_dir=autoencoder.path,
        features_dir=features.path,
    )
    features.metadata["shapes"] = result["shapes"]

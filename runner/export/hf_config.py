"""A keras-hub backbone's numbers -> the transformers config.json that describes the same model.

Each family's `to_hf` (runner/families/<name>.py) states the fields keras-hub's converter reads
(runner.hf.folder.keras_numbers is the inverse); every other field takes transformers' default
for the model type, which is the published models' own (Gemma 3's two rope bases, its
sliding-window pattern). The result is checked by converting it back: the same numbers, or the
export stops.
"""

from __future__ import annotations

from runner.errors import UserError
from runner.families import FAMILIES
from runner.hf.folder import keras_numbers


def hf_config(family: str, backbone) -> dict:
    """config.json for `backbone` (with "architectures"), checked by converting it back."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type, fields = FAMILIES[family].to_hf(backbone)
    config = AutoConfig.for_model(model_type, **fields).to_dict()
    config["architectures"] = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    config["torch_dtype"] = config["dtype"] = "float32"
    back = keras_numbers(family, config)
    own = backbone.get_config()
    differ = sorted(k for k, v in back.items() if k in own and own[k] != v and v is not None)
    if differ:
        raise UserError(f"the {family} model cannot be described as a transformers "
                        f"{model_type} config: {', '.join(differ)} would change; export is not "
                        "supported for this variant")
    return config

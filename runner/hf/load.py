"""A Hugging Face checkpoint folder -> a keras-hub CausalLM with exactly its weights.

keras-hub's own from_preset does the same through its converters; this goes through them too
(backbone numbers, weight map, tokenizer) but assigns every tensor through runner.hf.ports, so no
converter hook can change a value (convert_mistral casts to float16), and it passes the
config fields the converters drop (runner.hf.folder.keras_numbers).
"""

from __future__ import annotations

from pathlib import Path

from keras_hub.src.utils.transformers.safetensor_utils import SafetensorLoader

from runner.errors import UserError
from runner.families import FAMILIES, correct
from runner.hf import folder as hf_folder
from runner.hf.ports import port


class _ExactLoader(SafetensorLoader):
    """keras-hub's safetensors reader (shards, key prefixes), with exact placement."""

    def port_weight(self, keras_variable, hf_weight_key, hook_fn=None):
        tensor = self.get_tensor(hf_weight_key)
        mapped = port(keras_variable, hf_weight_key, tensor.shape, hook_fn)
        keras_variable.assign(mapped.to_keras(tensor))


def load_weights(backbone, family: str, location: str) -> None:
    """The check stage has read every weight file's header (runner.hf.files); a file damaged
    inside its tensors, or changed since, still ends as one line naming the folder."""
    from safetensors import SafetensorError

    hf_config = hf_folder.read_config(Path(location))
    try:
        with _ExactLoader(location) as loader:
            hf_folder.converter(family).convert_weights(backbone, loader, hf_config)
    except (SafetensorError, OSError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else \
            type(exc).__name__
        raise UserError(f"model.preset={location}: its weights could not be read ({reason}); "
                        "the folder is damaged or changed while loading: download it again"
                        ) from None


def preprocessor(location: str, family: str):
    """The family's CausalLM preprocessor over the folder's tokenizer files."""
    import keras_hub

    classes = FAMILIES[family]
    tokenizer_cls = getattr(keras_hub.models, classes.prefix + "Tokenizer")
    tokenizer = hf_folder.converter(family).convert_tokenizer(tokenizer_cls, location)
    return getattr(keras_hub.models, classes.prefix + "CausalLMPreprocessor")(tokenizer)


def causal_lm(location: str, family: str, numbers: dict, dtype: str, preprocessor_=None):
    """The CausalLM (with its tokenizer and preprocessor) of the checkpoint at `location`."""
    import keras_hub

    classes = FAMILIES[family]
    backbone = getattr(keras_hub.models, classes.backbone)(**numbers, dtype=dtype)
    correct(backbone)
    load_weights(backbone, family, location)
    return getattr(keras_hub.models, classes.prefix + "CausalLM")(
        backbone=backbone, preprocessor=preprocessor_ or preprocessor(location, family))

"""What a model family is, in one record: a family module (runner/families/<name>.py) fills one
in, and the registry (runner/families/__init__.py) lists them. Pure data and small functions of
a backbone: nothing here imports keras, so the config layer can read it at start-up."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Tiny:
    """A tiny transformers checkpoint of one model type, for the tests' family harness
    (tests/hf_checkpoints.py writes it with save_pretrained): the transformers config class,
    fields beyond the shared tiny sizes, and the kind of tokenizer trained for it."""
    config_class: str
    fields: dict
    tokenizer: str


@dataclass(frozen=True)
class Family:
    name: str  # model.family
    backbone: str  # keras_hub.models.<backbone>; the task classes share its prefix
    # Hugging Face config.json "model_type"s keras-hub converts into this backbone, and the
    # converter module (keras_hub/src/utils/transformers/<converter>.py) that does it.
    hf_model_types: tuple
    converter: str
    # Tokenizer files a Hugging Face folder needs: any one of these sets, all of its files.
    hf_tokenizer_files: tuple
    # keras-hub names each transformer block <block_stem><index> (decoder_block_3,
    # transformer_layer_3): train.remat=blocks checkpoints these layers.
    block_stem: str
    chat_template: str  # its own chat format (a name in runner/chat.py TEMPLATES)
    chat_templates: tuple  # every template whose special tokens its tokenizer has
    # backbone -> (transformers model_type, config.json fields keras-hub's converter reads back)
    to_hf: Callable
    # model_type -> tensors each layer has beyond the shared decoder ones (runner/hf/shapes.py):
    # (name, width) with width one of hidden, head, query, kv, ffw
    hf_layer_tensors: dict
    # For a mixture of experts: (widths, config.json) -> the tensors each layer has in place of
    # the dense mlp.gate_proj / up_proj / down_proj; None: the dense ones.
    hf_mlp_tensors: Optional[Callable] = None
    # config.json -> what keras-hub's converter would get wrong for it (a field it ignores that
    # changes the numbers), as one sentence; None when it converts exactly.
    hf_config_problem: Optional[Callable] = None
    # Feed-forward branch width as a share of `intermediate_dim`: keras-hub's Gemma and Gemma 2
    # halve it for each of the two gating branches (GemmaDecoderBlock); the others do not.
    ffw_share: int = 1
    # What layout=auto uses: "keras-hub" (the backbone's own get_layout_map), a conf/layout file
    # name, or "derived" (rules derived from the variables' shapes: runner/derived_layout.py).
    auto_layout: str = "derived"
    # Corrections for keras-hub faults that change the model's numbers, applied to every
    # backbone built (from a preset, a folder, or for a plan): functions of the backbone.
    corrections: tuple = ()
    tiny: dict = field(default_factory=dict)  # model_type -> Tiny, for the family harness

    @property
    def prefix(self) -> str:  # GemmaBackbone -> Gemma: GemmaCausalLM, GemmaTokenizer, ...
        return self.backbone[: -len("Backbone")]

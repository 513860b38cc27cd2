"""Model config -> keras-hub CausalLM (+ LoRA), and the same model with no memory, for planning.

What a preset is and which architecture it has: runner/presets.py. A Hugging Face folder loads
through runner/hf/load.py (exact weights); everything else through keras-hub's from_preset.
"""

from __future__ import annotations

import contextlib

from runner import nf4_layers, nf4_loading
from runner.backbones import (backbone_class, causal_lm_class, dtype_policy, no_memory_scope,
                              stable_names)
from runner.errors import UserError
from runner.factored_lora import add_dropout, factor
from runner.families import FAMILIES, by_backbone, correct
from runner.gc_scope import one_collection
from runner.plan.memory import Dimensions
from runner.presets import (SHIPPED_PRESETS, TRANSFORMERS, describe, from_preset,  # noqa: F401
                            resolve_preset)
from runner.remat import block_scope


def random_weights(model_cfg) -> bool:
    """model.weights=random (a model group made by hand, without the key, means the preset's)."""
    return str(getattr(model_cfg, "weights", "preset")) == "random"


def check_supported(quant_cfg, lora_cfg) -> None:
    """Reject what cannot be done, before any weight is loaded; never silently skip."""
    if lora_cfg.dropout and quant_cfg.mode == "int8":
        raise UserError(
            f"lora.dropout={lora_cfg.dropout} with quant=int8: LoRA on Keras's int8 layers runs "
            "in Keras's own quantized call, which has no dropout; set lora.dropout=0, or use "
            "quant=nf4 or int4 (the runner's own 4-bit layers)")
    if lora_cfg.rank < 0:
        raise UserError(f"lora.rank={lora_cfg.rank} must be 0 (off) or positive")
    if quant_cfg.mode != "none" and lora_cfg.rank == 0:
        raise UserError(f"quant={quant_cfg.mode} with lora.rank=0: a quantized base is "
                        "frozen, so nothing would train; use LoRA (e.g. lora=rank16) or quant=none")
    if quant_cfg.mode == "int4" and quant_cfg.double_quant:
        raise UserError("quant.double_quant=true with quant=int4: double quantization is NF4's "
                        "(int4 keeps a float32 scale and an int8 zero point per block); set "
                        "quant.double_quant=false")


# lora.targets=[all-linear]: every dense layer of the blocks, as PEFT's target_modules="all-linear"
# (the output layer, here the token embedding in reverse, left out as PEFT leaves it out)
ALL_LINEAR = "all-linear"


def linear_layer_names(backbone) -> list[str]:
    import keras

    return sorted({layer.name for layer in backbone._flatten_layers(include_self=False)
                   if hasattr(layer, "enable_lora") and layer.weights
                   and not isinstance(layer, keras.layers.Embedding)})


def lora_alpha_of(lora_cfg) -> float:
    return float(lora_cfg.alpha) if lora_cfg.alpha is not None else float(lora_cfg.rank)


def apply_lora(backbone, lora_cfg) -> list[str]:
    """Enable LoRA with rank, alpha and targets honoured exactly; returns the adapted layers.

    keras-hub's Backbone.enable_lora takes no alpha (it leaves alpha = rank); the layers'
    own scale is `lora_alpha / lora_rank`, read at call time, so setting it afterwards is exact.
    """
    if lora_cfg is None or lora_cfg.rank <= 0:  # None: no LoRA (an export's base)
        return []
    targets = list(lora_cfg.targets) if lora_cfg.targets else backbone.default_lora_layer_names()
    if targets == [ALL_LINEAR]:
        targets = linear_layer_names(backbone)
    backbone.enable_lora(lora_cfg.rank, target_layer_names=targets)
    adapted = [layer for layer in backbone._flatten_layers(include_self=False)
               if getattr(layer, "lora_enabled", False)]
    if not adapted:
        names = sorted({layer.name for layer in backbone._flatten_layers(include_self=False)
                        if layer.weights and hasattr(layer, "enable_lora")})
        raise UserError(f"lora.targets={targets} match no layer of this model; "
                        f"layers that take LoRA: {names}")
    factored = factor(adapted)  # x @ W + s * (x @ A) @ B: no merged kernel or its gradient
    if lora_cfg.dropout:
        whole = sorted({layer.name for layer in adapted} - {layer.name for layer in factored})
        if whole:  # checked before weights (check_supported); this is the layers' own word
            raise UserError(f"lora.dropout={lora_cfg.dropout}: LoRA on {whole} is not computed "
                            "by the runner, so it cannot drop out; set lora.dropout=0")
        add_dropout(factored, lora_cfg.dropout)
    for layer in adapted:
        layer.lora_alpha = lora_alpha_of(lora_cfg)
        # Keras leaves an adapted layer's bias trainable (Qwen 2's query/key/value have one);
        # keras-hub's adapter file does not hold it, so it would train and then be lost. LoRA
        # as PEFT defines it (bias="none") trains A and B only.
        if getattr(layer, "bias", None) is not None:
            layer.bias.trainable = False
    return sorted({layer.name for layer in adapted})


def _quantize(backbone, quant_cfg) -> None:
    """Keras's own int8 (before LoRA: Keras adds LoRA to its quantized layers); nf4 and int4
    are the runner's and come after LoRA (runner/nf4_layers.py)."""
    import warnings

    mode = quant_cfg.mode if quant_cfg is not None else "none"  # None: not quantized
    if mode == "int8":
        with warnings.catch_warnings(), one_collection():  # one gc.collect, not one per layer
            # "RMSNormalization has no quantize method": expected
            warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
            backbone.quantize(mode)


def remat_scope(remat, described):
    """train.remat as Keras's RematScope. Keras reads the scope when a layer is *created*
    (Operation.__init__ keeps it) and applies it when the layer is called, so the model must be
    built inside it. blocks: each transformer block is one jax.checkpoint (of its array
    arguments: runner/remat.py), so the backward pass keeps only the blocks' inputs and
    recomputes one block at a time."""
    if str(remat) == "none":
        return contextlib.nullcontext()
    stem = FAMILIES[described.family].block_stem
    return block_scope([f"{stem}{i}" for i in range(described.numbers.get("num_layers", 0))])


def abstract_backbone(model_cfg, lora_cfg, quant_cfg, precision, described=None,
                      nf4: bool = True):
    """The backbone with shapes, paths, quantized and LoRA variables but no memory behind them,
    built from the preset's numbers (runner.presets.describe: no weights are read).
    nf4=False: a quant=nf4 (or int4) backbone with its float kernels still (the plan lays them out
    first, then maps their specs onto the NF4 variables: runner/plan/nf4_plan.py).

    keras.StatelessScope(initialize_variables=False) keeps initializers from running, so a 27B
    architecture costs seconds and no weight memory.
    """
    described = described or describe(model_cfg)
    with no_memory_scope(), stable_names():
        backbone = backbone_class(described.family)(**described.numbers,
                                                    dtype=dtype_policy(precision))
        correct(backbone)
        _quantize(backbone, quant_cfg)
        apply_lora(backbone, lora_cfg)
        if nf4 and four_bit(quant_cfg):
            nf4_layers.quantize(backbone, quant_cfg, abstract=True)
    return backbone


def is_nf4(quant_cfg) -> bool:
    return quant_cfg is not None and str(quant_cfg.mode) == "nf4"


def four_bit(quant_cfg) -> bool:
    """quant=nf4 or int4: the runner's own 4-bit layers (runner/nf4_layers.py)."""
    return quant_cfg is not None and str(quant_cfg.mode) in nf4_layers.FORMATS


def dimensions(backbone):
    """The sizes activation memory depends on, from the backbone's config (None: unknown)."""
    family = by_backbone(type(backbone).__name__)
    if family is None:
        return None
    share = family.ffw_share
    c = backbone.get_config()
    return Dimensions(
        layers=c["num_layers"], hidden=c["hidden_dim"], query_heads=c["num_query_heads"],
        kv_heads=c["num_key_value_heads"],
        head_dim=c.get("head_dim") or c["hidden_dim"] // c["num_query_heads"],
        # keras-hub's mixture-of-experts blocks (Mixtral) run every expert on every token
        ffw=c["intermediate_dim"] // share * c.get("num_experts", 1),
        vocabulary=c["vocabulary_size"])


SHIPPED_TOKENIZER_PRESET = "tiny_gemma"  # model.weights=random where the preset is not here


def load_preprocessor(model_cfg, described=None):
    """The preset's CausalLM preprocessor (its tokenizer), no weights: the data pipeline is
    built with it before any weight loads, so a data mistake costs seconds. With
    model.weights=random and a preset that cannot be read here, the shipped tokenizer."""
    import keras_hub

    described = described or describe(model_cfg)
    if described.location is None:
        if random_weights(model_cfg):
            return _shipped_preprocessor(model_cfg, described)
        resolve_preset(model_cfg.preset)
    if described.kind == TRANSFORMERS:
        from runner.hf import load as hf_load

        return hf_load.preprocessor(described.location, described.family)
    return from_preset(keras_hub.models.CausalLMPreprocessor.from_preset, described.location)


def _shipped_preprocessor(model_cfg, described):
    import logging

    import keras_hub

    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        str(SHIPPED_PRESETS / SHIPPED_TOKENIZER_PRESET))
    vocabulary = described.numbers.get("vocabulary_size", 0)
    if preprocessor.tokenizer.vocabulary_size() > vocabulary:
        raise UserError(f"model.weights=random: {model_cfg.preset} cannot be read here and the "
                        f"shipped tokenizer's {preprocessor.tokenizer.vocabulary_size()} tokens "
                        f"do not fit its vocabulary of {vocabulary}; give a local preset folder")
    logging.getLogger(__name__).warning(
        "model.weights=random: %s is not here, so its tokenizer is the shipped %s one (token "
        "ids stay below its vocabulary of %d)", model_cfg.preset, SHIPPED_TOKENIZER_PRESET,
        vocabulary)
    return preprocessor


def _random_causal_lm(described, precision, preprocessor):
    """The architecture with freshly initialised weights, seeded by keras.utils.set_random_seed
    (the run sets it from `seed` before building)."""
    backbone = backbone_class(described.family)(**described.numbers,
                                                dtype=dtype_policy(precision))
    return causal_lm_class(described.family)(backbone=backbone, preprocessor=preprocessor)


def build_causal_lm(model_cfg, lora_cfg, quant_cfg, precision, preprocessor=None,
                    remat="none", described=None):
    """The CausalLM (the preset's weights, or random ones with model.weights=random;
    `preprocessor` when given, else the preset's), the frozen base quantized, LoRA added, built
    under train.remat's scope; lora_cfg / quant_cfg None: no LoRA, not quantized. `described`:
    the check stage's description of the preset (described again when not given). Call inside
    the distribution's scope so every variable is created
    with its layout."""
    described = described or describe(model_cfg)
    with remat_scope(remat, described), stable_names():
        if four_bit(quant_cfg):  # one layer at a time, never the whole float base
            random = random_weights(model_cfg)
            if not random and described.location is None:
                resolve_preset(model_cfg.preset)  # raises the reason it cannot be had here
            if preprocessor is None and not random:  # the preset's, as from_preset gives it
                preprocessor = load_preprocessor(model_cfg, described)
            return nf4_loading.causal_lm(described, lambda backbone: apply_lora(backbone,
                                                                                 lora_cfg),
                                         quant_cfg, precision, preprocessor, random)
        if random_weights(model_cfg):
            causal_lm = _random_causal_lm(described, precision, preprocessor)
        else:
            causal_lm = _preset_causal_lm(model_cfg, described, precision, preprocessor)
        correct(causal_lm.backbone)
        _quantize(causal_lm.backbone, quant_cfg)
        apply_lora(causal_lm.backbone, lora_cfg)
    return causal_lm


def _preset_causal_lm(model_cfg, described, precision, preprocessor):
    import keras_hub

    if described.location is None:  # planned from a model file; loading needs the preset
        resolve_preset(model_cfg.preset)  # raises the reason it cannot be had here
    if described.kind == TRANSFORMERS:
        from runner.hf import load as hf_load

        causal_lm = hf_load.causal_lm(described.location, described.family, described.numbers,
                                      dtype_policy(precision), preprocessor)
    else:
        extra = {"preprocessor": preprocessor} if preprocessor is not None else {}
        causal_lm = from_preset(keras_hub.models.CausalLM.from_preset, described.location,
                                 dtype=dtype_policy(precision), **extra)
    return causal_lm

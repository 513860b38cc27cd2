"""quant=nf4's (and int4's) model loaded one linear layer at a time: the full-precision base is
never held.

The backbone is built with no memory behind its variables (as the plan builds it), LoRA added
and every linear layer made 4-bit (runner/nf4_layers.py, NF4 or int4 storage) while nothing is
allocated. Then the other variables (embedding, norms, LoRA, the 4-bit variables' zeros) are
allocated, and each linear layer's float kernel is read, placed as the plan's load rule places
it, quantized into the layer's 4-bit variables and dropped before the next is read:
    a keras-hub preset   Keras's own weights-file reader, which calls each layer's
                         load_own_variables (the 4-bit layer's quantizes what it reads)
    a Hugging Face folder the converter's port_weight (runner/hf/load.py) assigns to the
                         layer's `kernel`, which while loading is a stand-in that quantizes
    model.weights=random each kernel's own initializer, run one kernel at a time
So loading needs the 4-bit base plus one float kernel, where quantizing after a full-precision
load needed the whole float base (gemma_7b_en: 15.9 GB in bfloat16 against 5.2 GB). Every value
equals what quantizing after the full load gives (tests/test_nf4_loading.py).
"""

from __future__ import annotations

from runner import nf4_layers
from runner.backbones import backbone_class, causal_lm_class, dtype_policy, no_memory_scope
from runner.families import correct
from runner.presets import TRANSFORMERS, from_preset


class _KernelSink:
    """Stands in for a 4-bit layer's float kernel while the model loads: a value assigned to it
    is cast to the kernel's dtype and placed as the kernel would be (Variable.assign's steps),
    then quantized into the layer's 4-bit variables; nothing of it is kept."""

    def __init__(self, layer, variable):
        self.layer, self.variable = layer, variable  # `variable`: the deferred float kernel
        self.path, self.shape, self.dtype = variable.path, tuple(variable.shape), variable.dtype
        self.assigned = 0

    def assign(self, value):
        import keras

        value = keras.ops.convert_to_tensor(value, dtype=self.dtype)
        if tuple(value.shape) != self.shape:
            raise ValueError(f"{self.path}: a kernel of shape {tuple(value.shape)} was loaded "
                             f"into a layer of shape {self.shape}")
        distribution = keras.distribution.distribution()
        if distribution is not None:
            value = keras.distribution.distribute_tensor(
                value, distribution.get_variable_layout(self.variable))
        nf4_layers.store(self.layer, value)
        self.assigned += 1

    def initial_value(self):
        """The kernel's initializer's value (model.weights=random), placed as the kernel."""
        self.variable._deferred_initialize()  # Keras's own deferred initialization, one variable
        value, self.variable._value = self.variable.value, None
        return value


def causal_lm(described, add_lora, quant_cfg, precision, preprocessor, random: bool):
    """The 4-bit (quant=nf4 or int4) CausalLM of `described` (runner.presets.describe), its
    weights the preset's, or random ones (`random`: model.weights=random); `add_lora(backbone)`
    adds LoRA (runner.model.apply_lora). Call inside the distribution's scope, under
    train.remat's scope and stable_names, as runner.model.build_causal_lm does."""
    with no_memory_scope():
        backbone = backbone_class(described.family)(**described.numbers,
                                                    dtype=dtype_policy(precision))
        correct(backbone)
    # the task before LoRA, as when LoRA is added to a loaded model (Keras's initializers draw
    # their seeds in the same order, so LoRA starts from the same values); outside the scope:
    # the task compiles, which makes an optimizer
    lm = causal_lm_class(described.family)(backbone=backbone, preprocessor=preprocessor)
    with no_memory_scope():
        add_lora(backbone)
        kernels = {id(layer): layer._kernel for layer in nf4_layers.quantizable_layers(backbone)}
        layers = nf4_layers.quantize(backbone, quant_cfg, abstract=True)
    _allocate(lm)
    sinks = [_KernelSink(layer, kernels.pop(id(layer))) for layer in layers]
    if random:
        for sink in sinks:
            sink.assign(sink.initial_value())
    else:
        _load(backbone, described, sinks)
    missing = [sink.path for sink in sinks if sink.assigned != 1]
    if missing:  # a loader that skipped (or repeated) a kernel: never train on zeros
        raise RuntimeError(f"quant={quant_cfg.mode}: {len(missing)} kernels were not loaded "
                           "exactly once, "
                           f"e.g. {missing[0]}")
    return lm


def _allocate(lm) -> None:
    """Allocate every variable the no-memory build deferred (the float kernels of 4-bit layers are
    no longer the model's). Keras has a public call only for all deferred variables of the
    process at once, hence its per-variable one."""
    for variable in lm.variables:
        if variable._value is None:
            variable._deferred_initialize()


def _load(backbone, described, sinks) -> None:
    """The preset's weights, each 4-bit layer's kernel through its sink (see the module's
    docstring); LoRA's variables keep their initial values, as when LoRA is added after
    loading."""
    lora = [v for v in backbone.variables if v.path.rsplit("/", 1)[-1].startswith("lora_")]
    initial = [variable.value for variable in lora]
    for sink in sinks:
        sink.layer.nf4_sink = sink
    try:
        if described.kind == TRANSFORMERS:
            from runner.hf import load as hf_load

            hf_load.load_weights(backbone, described.family, described.location)
        else:
            _keras_weights(backbone, described.location)
    finally:
        for sink in sinks:
            del sink.layer.nf4_sink
    for variable, value in zip(lora, initial):
        variable.assign(value)


def _keras_weights(backbone, location: str) -> None:
    """keras-hub's reading of a preset's weights (one file or shards, downloaded when remote)
    into `backbone`: its loader's own method (private), so shards and downloads stay keras-hub's."""
    from keras_hub.src.utils.preset_utils import get_preset_loader

    from_preset(lambda preset: get_preset_loader(preset)._load_backbone_weights(backbone),
                 location)

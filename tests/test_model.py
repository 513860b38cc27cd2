"""The model builder: LoRA rank, alpha and targets honoured exactly."""

from conftest import compose


def test_lora_alpha_is_honoured_exactly():
    import numpy as np
    from keras import ops

    from runner import model

    cfg = compose("lora.rank=4", "lora.alpha=8", "lora.targets=[query]")
    causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    layers = [l for l in causal_lm.backbone._flatten_layers() if getattr(l, "lora_enabled", 0)]
    assert {l.name for l in layers} == {"query"} and len(layers) == 4
    layer = layers[0]
    layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape, "float32"))
    a, b = ops.convert_to_numpy(layer.lora_kernel_a), ops.convert_to_numpy(layer.lora_kernel_b)
    expected = ops.convert_to_numpy(layer._kernel) + (8 / 4) * np.einsum("hdr,rk->hdk", a, b)
    assert np.allclose(ops.convert_to_numpy(layer.kernel), expected, atol=1e-6)

"""Sampling from a CausalLM: the sampler by name, prompt batches that fit the mesh, and the
probe logits that let a reloaded adapter prove it is the one that was trained."""

from __future__ import annotations

import numpy as np

from runner.errors import UserError

PROBE_LENGTH = 16  # tokens of the probe input whose logits are stored with an adapter


def build_sampler(generate_cfg, seed: int):
    import keras_hub

    name = str(generate_cfg.sampler)
    if name == "greedy":
        return keras_hub.samplers.GreedySampler()
    if name == "top_k":
        return keras_hub.samplers.TopKSampler(k=generate_cfg.top_k, seed=seed,
                                              temperature=generate_cfg.temperature)
    if name == "top_p":
        return keras_hub.samplers.TopPSampler(p=generate_cfg.top_p, seed=seed,
                                              temperature=generate_cfg.temperature)
    raise UserError(f"generate.sampler={name} is unknown; valid: greedy, top_k, top_p")


def _padded(prompts: list[str], multiple: int) -> list[str]:
    """generate() under model parallel needs a batch that divides the batch axis: repeat the
    last prompt up to a multiple, and drop the extra outputs afterwards."""
    return prompts + [prompts[-1]] * (-len(prompts) % multiple)


def generate(causal_lm, prompts, max_length: int, batch_axis_size: int) -> list[str]:
    prompts = list(prompts)
    if not prompts:
        return []
    out = causal_lm.generate(_padded(prompts, batch_axis_size), max_length=max_length)
    return [str(t) for t in list(out)[:len(prompts)]]


def probe_logits(causal_lm, preprocessor, prompts, batch_axis_size: int):
    """(inputs, logits) of the model on the prompts, a fixed-length batch; inputs holds the
    token_ids and the padding_mask (padded positions' logits are not comparable across
    implementations)."""
    x = preprocessor.generate_preprocess(_padded(list(prompts), batch_axis_size),
                                         sequence_length=PROBE_LENGTH)
    import keras

    x = {k: np.asarray(v) for k, v in x.items()}
    logits = causal_lm(x, training=False)  # the model itself, not its preprocessing wrapper
    return x, np.asarray(keras.ops.convert_to_numpy(logits), dtype="float32")

"""Sampling from a CausalLM: the sampler by name, prompt batches that fit the mesh, and the
probe logits that let a reloaded adapter prove it is the one that was trained."""

from __future__ import annotations

import functools

import numpy as np

from runner.errors import UserError

PROBE_LENGTH = 16  # tokens of the probe input whose logits are stored with an adapter


def build_sampler(generate_cfg, seed: int, vocabulary_limit: int | None = None):
    """The sampler generate.sampler names. vocabulary_limit: sample only ids below it (see
    vocabulary_limit())."""
    import keras_hub

    name = str(generate_cfg.sampler)
    if name == "greedy":
        kind, kwargs = keras_hub.samplers.GreedySampler, {}
    elif name == "top_k":
        kind, kwargs = keras_hub.samplers.TopKSampler, dict(
            k=generate_cfg.top_k, seed=seed, temperature=generate_cfg.temperature)
    elif name == "top_p":
        kind, kwargs = keras_hub.samplers.TopPSampler, dict(
            p=generate_cfg.top_p, seed=seed, temperature=generate_cfg.temperature)
    else:
        raise UserError(f"generate.sampler={name} is unknown; valid: greedy, top_k, top_p")
    if vocabulary_limit is not None:
        kind, kwargs = _limited(kind), {**kwargs, "vocabulary_limit": vocabulary_limit}
    return kind(**kwargs)


def vocabulary_limit(causal_lm) -> int | None:
    """The tokenizer's vocabulary size when the model's output layer is larger, else None.

    A model's vocabulary can exceed its tokenizer's: padded embeddings (Qwen's 151,936 rows for
    151,665 tokens), or model.weights=random with the shipped tokenizer (262,144 rows for a few
    hundred tokens). An id past the tokenizer's end cannot be detokenized (SentencePiece: "piece
    id is out of range"), so such ids are never sampled."""
    preprocessor = getattr(causal_lm, "preprocessor", None)
    if preprocessor is None:
        return None
    tokens = int(preprocessor.tokenizer.vocabulary_size())
    return tokens if tokens < int(causal_lm.backbone.vocabulary_size) else None


@functools.cache
def _limited(sampler_class):
    """sampler_class, sampling only ids below `vocabulary_limit`: the logits of the others are
    set to the lowest float before the sampler's own softmax, so every sampler (greedy, top-k,
    top-p, any temperature) gives them probability 0."""
    import keras

    class VocabularyLimited(sampler_class):
        def __init__(self, vocabulary_limit: int, **kwargs):
            super().__init__(**kwargs)
            self.vocabulary_limit = vocabulary_limit

        def compute_probabilities(self, logits):
            ops = keras.ops
            logits = ops.cast(logits, "float32")
            ids = ops.arange(ops.shape(logits)[-1])
            lowest = float(np.finfo(np.float32).min)
            return super().compute_probabilities(
                ops.where(ids < self.vocabulary_limit, logits, lowest))

        def get_config(self):
            return {**super().get_config(), "vocabulary_limit": self.vocabulary_limit}

    VocabularyLimited.__name__ = f"VocabularyLimited{sampler_class.__name__}"
    return VocabularyLimited


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

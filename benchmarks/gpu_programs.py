"""The two hand-written programs benchmarks/gpu.py sets beside the runner: a real architecture
(conf/model/<model>.yaml's numbers, random weights), LoRA, synthetic token ids, one device.
Written as a user would without the runner: keras-hub and Keras's fit, or the model's
stateless_call in a jitted, donated optax step. Imports no TensorFlow, TFDS or W&B. Prints one
JSON line: steady step time, model FLOPs per step, peak memory.

    python benchmarks/gpu_programs.py keras gemma_2b_en --batch 1 --length 2048
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

CONF = Path(__file__).resolve().parent.parent / "runner" / "conf" / "model"
CLASSES = {"gemma": ("GemmaBackbone", "GemmaCausalLM"), "gemma3": ("Gemma3Backbone",
                                                                    "Gemma3CausalLM")}


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("program", choices=("keras", "jax"))
    parser.add_argument("model")
    for name, default in (("batch", 1), ("length", 2048), ("rank", 4), ("steps", 30),
                          ("warmup", 10)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--precision", default="bfloat16")
    return parser.parse_args()


def build(args):
    import keras
    import keras_hub
    import yaml

    spec = yaml.safe_load((CONF / f"{args.model}.yaml").read_text())
    backbone_name, task_name = CLASSES[spec["family"]]
    keras.utils.set_random_seed(0)
    backbone = getattr(keras_hub.models, backbone_name)(**spec["architecture"],
                                                        dtype=args.precision)
    backbone.enable_lora(rank=args.rank)
    return getattr(keras_hub.models, task_name)(backbone=backbone, preprocessor=None), spec


def batches(args, vocabulary: int):
    """Seeded random token ids: (x, y, sample weight) NumPy batches."""
    import numpy as np

    for step in range(args.steps):
        ids = np.random.default_rng([0, step]).integers(
            1, vocabulary, size=(args.batch, args.length + 1), dtype=np.int32)
        yield ({"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1], bool)},
               ids[:, 1:], np.ones((args.batch, args.length), np.float32))


def flops_per_step(backbone, args) -> float:
    """PaLM's accounting, as runner/flops.py: 6 FLOPs per trainable weight per token, 4 per
    frozen one, plus attention."""
    import math

    total = sum(math.prod(v.shape) for v in backbone.weights)
    trainable = sum(math.prod(v.shape) for v in backbone.trainable_weights)
    c = backbone.get_config()
    head_dim = c.get("head_dim") or c["hidden_dim"] // c["num_query_heads"]
    attention = 12 * c["num_layers"] * c["num_query_heads"] * head_dim * args.length
    return (4 * (total - trainable) + 6 * trainable + attention) * args.batch * args.length


def run_keras(lm, args, vocabulary: int) -> list[float]:
    import keras

    lm.compile(optimizer=keras.optimizers.AdamW(2e-5, weight_decay=0.01),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
               weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # the step is done when its loss is on the host
            ends.append(time.perf_counter())
    keras.Model.fit(lm, batches(args, vocabulary), steps_per_epoch=args.steps, epochs=1,
                    callbacks=[Clock()], verbose=0)
    return ends


def run_jax(lm, args, vocabulary: int) -> list[float]:
    import jax
    import jax.numpy as jnp
    import optax

    trainable = [v.value for v in lm.trainable_variables]
    frozen = [v.value for v in lm.non_trainable_variables]
    optimizer = optax.adamw(2e-5, weight_decay=0.01)
    opt_state = optimizer.init(trainable)

    def loss_fn(trainable, frozen, x, y, w):
        logits, _ = lm.stateless_call(trainable, frozen, x, training=True)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

    def train_step(trainable, opt_state, x, y, w):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, x, y, w)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss
    step = jax.jit(train_step, donate_argnums=(0, 1))  # weights and state updated in place
    ends = []
    for x, y, w in batches(args, vocabulary):
        trainable, opt_state, loss = step(trainable, opt_state, x, y, w)
        float(loss)
        ends.append(time.perf_counter())
    return ends


def main():
    args = parse_args()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax

    lm, spec = build(args)
    vocabulary = spec["architecture"]["vocabulary_size"]
    ends = (run_keras if args.program == "keras" else run_jax)(lm, args, vocabulary)
    steady = (ends[-1] - ends[args.warmup - 1]) / (len(ends) - args.warmup)
    peaks = [(d.memory_stats() or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    print(json.dumps({"step_time_s": steady, "flops_per_step": flops_per_step(lm.backbone, args),
                      "peak_device_bytes": max(peaks) if peaks else None,
                      "peak_host_rss_bytes": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "device_kind": jax.devices()[0].device_kind}))


if __name__ == "__main__":
    main()

"""The default experiment as a pure JAX + optax train step (the other way people fine-tune): the
same keras-hub model and layouts (created under the same ModelParallel distribution), called
through `stateless_call` inside one jax.jit step with optax.adamw on the LoRA weights; the batch
sharded on the mesh's batch axis. Prints one JSON line: step times after warm-up.

    python benchmarks/handwritten_jax.py --steps 200
"""

import json
import time

from baseline_common import PRESET, parse_args, set_environment, tiny_reviews_batches


def main():
    args = parse_args()
    set_environment()
    import jax
    import jax.numpy as jnp
    import keras
    import keras_hub
    import optax
    from jax.sharding import NamedSharding, PartitionSpec

    keras.utils.set_random_seed(0)
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"],
                                         keras.distribution.list_devices())
    layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    with keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch").scope():
        gemma = keras_hub.models.GemmaCausalLM.from_preset(str(PRESET))
        gemma.backbone.enable_lora(rank=4)
    gemma.preprocessor.sequence_length = args.length
    backbone = gemma.backbone
    trainable = [v.value for v in backbone.trainable_variables]
    frozen = [v.value for v in backbone.non_trainable_variables]

    optimizer = optax.adamw(2e-3, weight_decay=0.01)  # LoRA kernels: no bias or scale to exclude
    opt_state = optimizer.init(trainable)

    def loss_fn(trainable, x, y, w):
        logits, _ = gemma.stateless_call(trainable, frozen, x, training=True)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

    @jax.jit
    def step(trainable, opt_state, x, y, w):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, x, y, w)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    batch_sharding = NamedSharding(mesh.backend_mesh, PartitionSpec("batch"))
    data = tiny_reviews_batches(gemma.preprocessor, args.batch, args.steps)

    ends, start = [], time.perf_counter()
    for x, y, w in data.as_numpy_iterator():
        put = lambda a: jax.device_put(a, batch_sharding)  # noqa: E731
        trainable, opt_state, loss = step(trainable, opt_state,
                                          {k: put(v) for k, v in x.items()}, put(y),
                                          put(w.astype("float32")))
        float(loss)  # wait for the step, as any logging loop does
        ends.append(time.perf_counter() - start)
    print(json.dumps({"name": "jax", "step_ends": ends,
                      "tokens_per_step": args.batch * args.length}))


if __name__ == "__main__":
    main()

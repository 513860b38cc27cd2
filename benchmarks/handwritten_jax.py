"""The default experiment as a pure JAX + optax train step (the other way people fine-tune): the
same keras-hub model and layouts (created under the same ModelParallel distribution), called
through `stateless_call` inside one jax.jit step with optax.adamw on the LoRA weights; the batch
sharded on the mesh's batch axis. Written as a careful JAX user would: the step donates its
weights and optimizer state, and the next batch is put on the devices while the current step
runs. Prints one JSON line: step times after warm-up.

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

    def loss_fn(trainable, frozen, x, y, w):
        logits, _ = gemma.stateless_call(trainable, frozen, x, training=True)
        ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
        return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)

    def train_step(trainable, frozen, opt_state, x, y, w):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, frozen, x, y, w)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return optax.apply_updates(trainable, updates), opt_state, loss

    # The weights are arguments, not closed-over constants (JAX would compile those replicated,
    # on every device), and they keep the layout map's shardings from step to step.
    # optax's step count is made on one device: replicate it over the mesh like the rest.
    replicated = NamedSharding(mesh.backend_mesh, PartitionSpec())
    shardings = lambda tree: jax.tree.map(  # noqa: E731
        lambda a: a.sharding if isinstance(a.sharding, NamedSharding) else replicated, tree)
    opt_state = jax.device_put(opt_state, shardings(opt_state))
    step = jax.jit(train_step, donate_argnums=(0, 2),
                   out_shardings=(shardings(trainable), shardings(opt_state), None))

    batch_sharding = NamedSharding(mesh.backend_mesh, PartitionSpec("batch"))
    data = tiny_reviews_batches(gemma.preprocessor, args.batch, args.steps)

    def on_devices(batch):
        x, y, w = batch
        put = lambda a: jax.device_put(a, batch_sharding)  # noqa: E731
        return {k: put(v) for k, v in x.items()}, put(y), put(w.astype("float32"))

    batches = data.as_numpy_iterator()
    ends, start = [], time.perf_counter()
    current = on_devices(next(batches))
    for following in batches:
        trainable, opt_state, loss = step(trainable, frozen, opt_state, *current)
        current = on_devices(following)  # copied while the step runs (dispatch is async)
        float(loss)  # wait for the step, as any logging loop does
        ends.append(time.perf_counter() - start)
    trainable, opt_state, loss = step(trainable, frozen, opt_state, *current)
    float(loss)
    ends.append(time.perf_counter() - start)
    print(json.dumps({"name": "jax", "step_ends": ends,
                      "tokens_per_step": args.batch * args.length}))


if __name__ == "__main__":
    main()

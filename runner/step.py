"""The runner's own train and test step for a keras-hub CausalLM (runner.objective installs them).

Keras's step computes the model's logits, then the loss over them, then each metric over them
again: three passes over batch x length x vocabulary, with the float32 logits held whole for
the backward pass. This step runs the backbone, then the output layer tile by tile inside the
loss (runner.token_loss): the loss, the token count and the accuracy come from one log-softmax
per tile, and its gradient is taken there, so the logits never exist whole.

Gradient accumulation (train.gradient_accumulation_steps = N) splits the batch into N
micro-batches that run one after another (lax.scan: one micro-batch's activations at a time)
and update once. Each micro-batch's loss is its sum of token losses divided by the whole
batch's token count, so the update equals one step over the whole batch however the loss
tokens fall among the micro-batches (Keras's own accumulation averages the micro-steps
equally, which weighs a token of a short micro-batch more).
"""

from __future__ import annotations

import contextlib
import functools

from runner import documents


def install(causal_lm, token_metrics, tiles: int, accumulation: int = 1) -> None:
    """Make `causal_lm` (compiled, with `token_metrics` among its metrics) train and evaluate
    with this step. `tiles`: slices of the sequence the loss is computed over (it divides the
    sequence length); `accumulation`: micro-batches per update (it divides the batch)."""
    causal_lm.train_step = functools.partial(_train_step, causal_lm, token_metrics, tiles,
                                             accumulation)
    causal_lm.test_step = functools.partial(_test_step, causal_lm, token_metrics, tiles)


def _forward(lm, trainable, non_trainable, x, y, w, tiles: int, training: bool):
    """((loss_sum, count, correct), extra, the updated non-trainable values): the backbone
    under the given values, then the output layer inside the tiled loss. `extra`: the losses
    the model adds itself (Mixtral's router load-balancing loss), summed, as Keras adds them."""
    import keras

    from runner.token_loss import token_sums

    mapping = list(zip(lm.trainable_variables, trainable)) + \
        list(zip(lm.non_trainable_variables, non_trainable))
    x, packed = documents.split(x)  # packed rows: attention and positions per document
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope, \
            documents.documents(*packed) if packed else contextlib.nullcontext():
        hidden = lm.backbone(x, training=training)
        extra = sum((keras.ops.sum(keras.ops.cast(loss, "float32"))
                     for loss in lm.backbone.losses), keras.ops.zeros((), "float32"))
    updated = []
    for variable, value in zip(lm.non_trainable_variables, non_trainable):
        new = scope.get_current_value(variable)  # seed generators move on; weights do not
        updated.append(value if new is None else new)
    # Every keras-hub CausalLM the runner trains maps hidden states to logits with the
    # backbone's token embedding in reverse (tied or not, soft-capped or not, quantized or not);
    # tests/test_step.py checks the loss against Keras's step over the model's own logits in
    # every family.
    head_layer = lm.backbone.token_embedding
    values = {id(v): value for v, value in mapping}
    head_variables = list(head_layer.variables)

    def head(head_values, h):
        with keras.StatelessScope(state_mapping=list(zip(head_variables, head_values))):
            return head_layer(h, reverse=True)
    sums = token_sums(head, [values[id(v)] for v in head_variables],
                      [v.trainable for v in head_variables], hidden, y, w, tiles)
    return sums, extra, updated


def _weights(x, y, w):
    import jax.numpy as jnp

    return jnp.ones(y.shape, jnp.float32) if w is None else w.astype(jnp.float32)


def _micro_batches(tree, n: int):
    """Each leaf (batch, ...) -> (n, batch / n, ...), micro-batch i holding rows i, i + n, ...:
    a device's rows of the batch stay its rows in every micro-batch (no data moves)."""
    import jax

    def split(a):
        return a.reshape(a.shape[0] // n, n, *a.shape[1:]).swapaxes(0, 1)
    return jax.tree.map(split, tree)


def _train_step(lm, token_metrics, tiles, accumulation, state, data):
    import jax
    import jax.numpy as jnp
    from keras.src.trainers.data_adapters import data_adapter_utils

    trainable, non_trainable, optimizer_values, metric_values = state
    x, y, w = data_adapter_utils.unpack_x_y_sample_weight(data)
    w = _weights(x, y, w)
    total = jnp.maximum(jnp.sum(w), 1.0)  # the whole batch's loss tokens

    def loss(trainable, non_trainable, x, y, w):
        # the model's own losses (a mean over the micro-batch) count once per step
        sums, extra, non_trainable = _forward(lm, trainable, non_trainable, x, y, w, tiles,
                                              True)
        extra = extra / accumulation
        return sums[0] / total + extra, (sums, extra, non_trainable)
    grad = jax.value_and_grad(loss, has_aux=True)
    if accumulation == 1:
        (_, (sums, extra, non_trainable)), grads = grad(trainable, non_trainable, x, y, w)
    else:
        def micro(carry, batch):
            summed, sums, extra, non_trainable = carry
            (_, (more, more_extra, non_trainable)), grads = grad(trainable, non_trainable,
                                                                 *batch)
            summed = [s + g.astype(jnp.float32) for s, g in zip(summed, grads)]
            sums = tuple(a + b for a, b in zip(sums, more))
            return (summed, sums, extra + more_extra, non_trainable), None
        zero = jnp.zeros((), jnp.float32)
        start = ([jnp.zeros(v.shape, jnp.float32) for v in trainable], (zero, zero, zero),
                 zero, non_trainable)
        (summed, sums, extra, non_trainable), _ = jax.lax.scan(
            micro, start, _micro_batches((x, y, w), accumulation))
        grads = [s.astype(v.dtype) for s, v in zip(summed, trainable)]
    trainable, optimizer_values = lm.optimizer.stateless_apply(optimizer_values, grads,
                                                               trainable)
    logs, metric_values = _metrics(lm, token_metrics, metric_values, sums, extra, x)
    return logs, (trainable, non_trainable, optimizer_values, metric_values)


def _test_step(lm, token_metrics, tiles, state, data):
    from keras.src.trainers.data_adapters import data_adapter_utils

    trainable, non_trainable, metric_values = state
    x, y, w = data_adapter_utils.unpack_x_y_sample_weight(data)
    sums, extra, non_trainable = _forward(lm, trainable, non_trainable, x, y,
                                          _weights(x, y, w), tiles, False)
    logs, metric_values = _metrics(lm, token_metrics, metric_values, sums, extra, x)
    return logs, (trainable, non_trainable, metric_values)


def _metrics(lm, token_metrics, metric_values, sums, extra, x):
    """Keras's loss tracker (its `loss`: the running mean of the steps' token-mean losses, as
    with reduction mean_with_sample_weight, plus the model's own losses) and the token metrics
    (cross-entropy only), from the step's sums."""
    import keras
    from keras import ops, tree

    loss_sum, count, correct = sums
    mapping = list(zip(lm.metrics_variables, metric_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        batch = next(i for i in tree.flatten(x) if i is not None).shape[0]
        lm._loss_tracker.update_state(loss_sum / ops.maximum(count, 1.0) + extra,
                                      sample_weight=batch)
        token_metrics.update_from_sums(loss_sum, count, correct)
        logs = lm.get_metrics_result()
    values = []
    for variable in lm.metrics_variables:
        new = scope.get_current_value(variable)
        values.append(variable.value if new is None else new)
    return logs, values

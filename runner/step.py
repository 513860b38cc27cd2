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

import functools

from runner.backbone_pass import backbone_pass


def install(causal_lm, token_metrics, tiles: int, accumulation: int = 1,
            preference=None) -> None:
    """Make `causal_lm` (compiled, with `token_metrics` among its metrics) train and evaluate
    with this step. `tiles`: slices of the sequence the loss is computed over (it divides the
    sequence length); `accumulation`: micro-batches per update (it divides the batch);
    `preference`: (runner.preference_loss.Preference, its PreferenceMetrics, the pad token id)
    for a preference objective (runner/preference_step.py), None for cross-entropy."""
    causal_lm.train_step = functools.partial(_train_step, causal_lm, token_metrics, tiles,
                                             accumulation, preference)
    causal_lm.test_step = functools.partial(_test_step, causal_lm, token_metrics, tiles,
                                            preference)


def _forward(lm, trainable, non_trainable, x, y, w, tiles: int, training: bool):
    """((loss_sum, count, correct), extra, the updated non-trainable values): the backbone
    under the given values, then the output layer inside the tiled loss."""
    from runner.token_loss import token_sums

    hidden, extra, updated, head, head_values, head_trainable = backbone_pass(
        lm, trainable, non_trainable, x, training)
    sums = token_sums(head, head_values, head_trainable, hidden, y, w, tiles)
    return sums, extra, updated


def _weights(x, y, w):
    import jax.numpy as jnp

    return jnp.ones(y.shape, jnp.float32) if w is None else w.astype(jnp.float32)


def _objective(lm, preference, tiles, accumulation, total, training):
    """The step's loss of one (micro-)batch as f(trainable, non_trainable, x, y, w) ->
    (loss, (sums, extra, non_trainable)): cross-entropy summed over the loss tokens / the whole
    batch's loss tokens `total`, or the preference objective's share of the batch's mean (total:
    the step's pairs). The model's own losses (a mean over the micro-batch) count once per step."""
    from runner import preference_step

    def loss(trainable, non_trainable, x, y, w):
        if preference is None:
            sums, extra, non_trainable = _forward(lm, trainable, non_trainable, x, y, w, tiles,
                                                  training)
            value = sums[0] / total
        else:
            objective, _, pad = preference
            value, sums, extra, non_trainable = preference_step.loss_and_sums(
                lm, objective, trainable, non_trainable, x, y, w, tiles, training, total, pad)
        extra = extra / accumulation
        return value + extra, (sums, extra, non_trainable)
    return loss


def _train_step(lm, token_metrics, tiles, accumulation, preference, state, data):
    import jax
    import jax.numpy as jnp
    from keras.src.trainers.data_adapters import data_adapter_utils

    trainable, non_trainable, optimizer_values, metric_values = state
    x, y, w = data_adapter_utils.unpack_x_y_sample_weight(data)
    w = _weights(x, y, w)
    # the whole batch's loss tokens, or its pairs (2 rows each)
    total = jnp.maximum(jnp.sum(w), 1.0) if preference is None else y.shape[0] // 2
    grad = jax.value_and_grad(_objective(lm, preference, tiles, accumulation, total, True),
                              has_aux=True)
    if accumulation == 1:
        (_, (sums, extra, non_trainable)), grads = grad(trainable, non_trainable, x, y, w)
    else:
        def micro(carry, batch):
            summed, sums, extra, non_trainable = carry
            (_, (more, more_extra, non_trainable)), grads = grad(trainable, non_trainable,
                                                                 *batch)
            summed = [s + g.astype(jnp.float32) for s, g in zip(summed, grads)]
            sums = jax.tree.map(jnp.add, sums, more)
            return (summed, sums, extra + more_extra, non_trainable), None
        batches = _micro_batches((x, y, w), accumulation, preference is not None)
        first = jax.tree.map(lambda a: a[0], batches)
        shapes = jax.eval_shape(lambda *a: grad(*a)[0][1][0], trainable, non_trainable, *first)
        zero = jnp.zeros((), jnp.float32)
        start = ([jnp.zeros(v.shape, jnp.float32) for v in trainable],
                 jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes), zero,
                 non_trainable)
        (summed, sums, extra, non_trainable), _ = jax.lax.scan(micro, start, batches)
        grads = [s.astype(v.dtype) for s, v in zip(summed, trainable)]
    trainable, optimizer_values = lm.optimizer.stateless_apply(optimizer_values, grads,
                                                               trainable)
    logs, metric_values = _metrics(lm, token_metrics, preference, metric_values, sums, extra, x)
    return logs, (trainable, non_trainable, optimizer_values, metric_values)


def _micro_batches(tree, n: int, pairs: bool = False):
    """Each leaf (batch, ...) -> (n, batch / n, ...), micro-batch i holding rows i, i + n, ...:
    a device's rows of the batch stay its rows in every micro-batch (no data moves). Pairs
    (rows 2i, 2i + 1) move together: micro-batch i holds pairs i, i + n, ..."""
    import jax

    def split(a):
        if pairs:
            a = a.reshape(a.shape[0] // 2, 2, *a.shape[1:])
        a = a.reshape(a.shape[0] // n, n, *a.shape[1:]).swapaxes(0, 1)
        return a.reshape(n, -1, *a.shape[3 if pairs else 2:]) if pairs else a
    return jax.tree.map(split, tree)


def _test_step(lm, token_metrics, tiles, preference, state, data):
    from keras.src.trainers.data_adapters import data_adapter_utils

    trainable, non_trainable, metric_values = state
    x, y, w = data_adapter_utils.unpack_x_y_sample_weight(data)
    w = _weights(x, y, w)
    total = 1.0 if preference is None else y.shape[0] // 2
    _, (sums, extra, non_trainable) = _objective(lm, preference, tiles, 1, total, False)(
        trainable, non_trainable, x, y, w)
    logs, metric_values = _metrics(lm, token_metrics, preference, metric_values, sums, extra, x)
    return logs, (trainable, non_trainable, metric_values)


def _metrics(lm, token_metrics, preference, metric_values, sums, extra, x):
    """Keras's loss tracker (its `loss`: the running mean of the steps' losses: token-mean
    cross-entropy as with reduction mean_with_sample_weight, or the preference loss, plus the
    model's own losses), the token metrics (cross-entropy over the loss tokens) and a
    preference objective's metrics, from the step's sums."""
    import keras
    from keras import ops, tree

    token_sums, pair_sums = (sums, None) if preference is None else sums
    loss_sum, count, correct = token_sums
    mapping = list(zip(lm.metrics_variables, metric_values))
    with keras.StatelessScope(state_mapping=mapping) as scope:
        batch = next(i for i in tree.flatten(x) if i is not None).shape[0]
        if pair_sums is None:
            step_loss = loss_sum / ops.maximum(count, 1.0)
        else:
            step_loss = pair_sums["loss"] / ops.maximum(pair_sums["pairs"], 1.0)
            preference[1].update_from_sums(pair_sums)
        lm._loss_tracker.update_state(step_loss + extra, sample_weight=batch)
        token_metrics.update_from_sums(loss_sum, count, correct)
        logs = lm.get_metrics_result()
    values = []
    for variable in lm.metrics_variables:
        new = scope.get_current_value(variable)
        values.append(variable.value if new is None else new)
    return logs, values

"""The step's cross-entropy, token count and accuracy from one pass over the logits, tile by tile.

`token_sums(head, head_values, trainable, hidden, labels, weights, tiles)` returns the weighted
sum of cross-entropies, the weighted token count and the weighted count of tokens whose label
has the highest logit, computing the output layer (`head`: hidden -> logits) over `tiles`
slices of the sequence. Per tile, the float32 log-softmax is taken once (its max serves the
accuracy too), and under differentiation the tile's gradient is taken at once in the forward
pass (dlogits = softmax - onehot, weighted) and pushed through the head's VJP: the float32
batch x length x vocabulary logits and their gradient never exist whole, and no logit is
computed twice. This is the chunked cross-entropy of Liger-Kernel and Unsloth and MaxText's
vocabulary tiling; written here because none of them is a JAX library that takes a Keras
layer as the output layer.

The loss is a sum, so its cotangent is a scalar: the backward pass only scales the gradients
the forward pass kept (the hidden states' and the trainable head weights'). Frozen head
weights (LoRA: the embedding) get no gradient computed at all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _split(x, tiles: int):
    """(batch, length, ...) -> (tiles, batch, length / tiles, ...)."""
    b, t = x.shape[:2]
    return jnp.moveaxis(x.reshape(b, tiles, t // tiles, *x.shape[2:]), 1, 0)


def _join(x):
    """The inverse of _split."""
    tiles, b, t = x.shape[:3]
    return jnp.moveaxis(x, 0, 1).reshape(b, tiles * t, *x.shape[3:])


def _over_tiles(tile, carry, arrays, tiles: int):
    """lax.scan of `tile` over `tiles` slices of the sequence of each of `arrays`, its stacked
    outputs joined back; one tile is a plain call (no loop for XLA to keep)."""
    if tiles == 1:
        return tile(carry, arrays)
    carry, out = jax.lax.scan(tile, carry, tuple(_split(a, tiles) for a in arrays))
    return carry, None if out is None else _join(out)


def _learned(logits_of, values, trainable):
    """(the head's values that get gradients, the head as a function of them and the hidden
    states): the frozen values stay constants of the function, so no gradient is taken for
    them."""
    def logits_for(learned, h):
        merged, it = [], iter(learned)
        for value, learns in zip(values, trainable):
            merged.append(next(it) if learns else value)
        return logits_of(merged, h)
    return [v for v, learns in zip(values, trainable) if learns], logits_for


def _stats(logits, labels, weights):
    """(loss_sum, count, correct, log_normalizer) of one tile, from float32 logits."""
    top = jnp.max(logits, axis=-1)
    lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    # the label is a top prediction when its logit is the maximum (a tie counts as a hit,
    # where argmax would pick the first of the tied tokens)
    hit = (picked >= top).astype(jnp.float32)
    return (jnp.sum((lse - picked) * weights), jnp.sum(weights), jnp.sum(hit * weights), lse)


def _stats_and_softmax(logits, labels, weights):
    """_stats' sums and the softmax, from one exponential of the logits."""
    top = jnp.max(logits, axis=-1)
    exps = jnp.exp(logits - top[..., None])
    total = jnp.sum(exps, axis=-1)
    picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
    hit = (picked >= top).astype(jnp.float32)
    loss = top + jnp.log(total) - picked
    return (jnp.sum(loss * weights), jnp.sum(weights), jnp.sum(hit * weights),
            exps / total[..., None])


def token_sums(head, head_values, trainable, hidden, labels, weights, tiles: int):
    """(loss_sum, count, correct), float32 scalars. `head(head_values, hidden)` -> logits;
    `trainable[i]`: whether head_values[i] gets a gradient (static)."""
    trainable = tuple(bool(t) for t in trainable)
    dtypes = [v.dtype for v in head_values]
    labels = labels.astype(jnp.int32)
    weights = weights.astype(jnp.float32)

    def logits_of(values, h):
        return head(values, h).astype(jnp.float32)

    @jax.custom_vjp
    def sums(values, h):
        def tile(carry, xs):
            h_t, y_t, w_t = xs
            out = _stats(logits_of(values, h_t), y_t, w_t)[:3]
            return tuple(c + o for c, o in zip(carry, out)), None
        zero = jnp.zeros((), jnp.float32)
        return _over_tiles(tile, (zero, zero, zero), (h, labels, weights), tiles)[0]

    def forward(values, h):
        def tile(carry, xs):
            h_t, y_t, w_t = xs

            learned, logits_for = _learned(logits_of, values, trainable)
            logits, vjp = jax.vjp(logits_for, learned, h_t)
            loss_sum, count, correct, probs = _stats_and_softmax(logits, y_t, w_t)
            vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
            dlogits = jnp.where(vocab == y_t[..., None], probs - 1.0, probs) * w_t[..., None]
            d_learned, d_h = vjp(dlogits)
            sums_, grads = carry
            grads = [g + d.astype(jnp.float32) for g, d in zip(grads, d_learned)]
            return ((sums_[0] + loss_sum, sums_[1] + count, sums_[2] + correct), grads), d_h
        zero = jnp.zeros((), jnp.float32)
        grads0 = [jnp.zeros(v.shape, jnp.float32) for v, learns in zip(values, trainable)
                  if learns]
        (carry, grads), d_hidden = _over_tiles(tile, ((zero, zero, zero), grads0),
                                               (h, labels, weights), tiles)
        return carry, (grads, d_hidden)

    def backward(saved, cotangent):
        grads, d_hidden = saved
        g = cotangent[0]  # the loss sum's; the count and the hits are not differentiable
        it = iter(grads)
        d_values = [(g * next(it)).astype(dtype) if learns else None
                    for learns, dtype in zip(trainable, dtypes)]
        return d_values, (g * d_hidden).astype(d_hidden.dtype)

    sums.defvjp(forward, backward)
    return sums(list(head_values), hidden)


def _label_logp(logits, y_t):
    """(log p(label), 1 where the label has the top logit, the log-normaliser) per position."""
    top = jnp.max(logits, axis=-1)
    lse = top + jnp.log(jnp.sum(jnp.exp(logits - top[..., None]), axis=-1))
    picked = jnp.take_along_axis(logits, y_t[..., None], axis=-1)[..., 0]
    return picked - lse, (picked >= top).astype(jnp.float32), lse


def _dlogp_dlogits(logits, y_t, lse):
    """d log p(label) / d logits = onehot(label) - softmax."""
    vocab = jax.lax.broadcasted_iota(jnp.int32, logits.shape, logits.ndim - 1)
    return jnp.where(vocab == y_t[..., None], 1.0, 0.0) - jnp.exp(logits - lse[..., None])


def _sums(logp, hit, w_t):
    """(b, l), (b, l), (b, l, K) -> per-row sums (b, K) of each."""
    return jnp.einsum("bl,blk->bk", logp, w_t), jnp.einsum("bl,blk->bk", hit, w_t)


def _row_sums(logits_of, values, h, labels, weights, tiles: int, keep_unit_grad: bool):
    """(logps, hits) per row over the tiles; with keep_unit_grad also the hidden states'
    gradient of each position's log p(label) (the head frozen: only h gets one)."""
    def tile(carry, xs):
        h_t, y_t, w_t = xs
        if keep_unit_grad:
            logits, vjp = jax.vjp(lambda h_: logits_of(values, h_), h_t)
        else:
            logits = logits_of(values, h_t)
        logp, hit, lse = _label_logp(logits, y_t)
        out = _sums(logp, hit, w_t)
        d_h = vjp(_dlogp_dlogits(logits, y_t, lse))[0] if keep_unit_grad else None
        return (carry[0] + out[0], carry[1] + out[1]), d_h
    zero = jnp.zeros((h.shape[0], weights.shape[-1]), jnp.float32)
    return _over_tiles(tile, (zero, zero), (h, labels, weights), tiles)


def _head_backward(logits_of, values, trainable, h, labels, scale, tiles: int):
    """The trainable head's and the hidden states' gradients for per-position cotangents
    `scale` of log p(label): the output layer computed again, tile by tile."""
    def tile(grads, xs):
        h_t, y_t, s_t = xs

        learned, logits_for = _learned(logits_of, values, trainable)
        logits, vjp = jax.vjp(logits_for, learned, h_t)
        lse = _label_logp(logits, y_t)[2]
        d_learned, d_h_t = vjp(_dlogp_dlogits(logits, y_t, lse) * s_t[..., None])
        return [a + d.astype(jnp.float32) for a, d in zip(grads, d_learned)], d_h_t
    grads0 = [jnp.zeros(v.shape, jnp.float32) for v, learns in zip(values, trainable) if learns]
    return _over_tiles(tile, grads0, (h, labels, scale), tiles)


def row_logps(head, head_values, trainable, hidden, labels, weights, tiles: int):
    """(logps, hits), float32 (batch, K): per row, the sum of log p(label) over the positions
    of each of K weightings (`weights` (batch, length, K): say the answer's tokens and every
    real token), and how many of them the label is a top prediction at. Only logps is
    differentiable. The output layer runs tile by tile as in token_sums.

    A preference objective is not a sum over tokens: its gradient per row (dL/dlogp) is known
    only once every row's sum is. With a frozen head (LoRA) the forward pass keeps the hidden
    states' gradient of each position's log-probability (one tensor the size of the hidden
    states) and the backward pass scales it per position by sum_k dL/dlogp[row, k] x weight; a
    trainable head (full fine-tuning) needs that scale inside its own gradient, so its backward
    pass computes the output layer again, tile by tile."""
    trainable = tuple(bool(t) for t in trainable)
    dtypes = [v.dtype for v in head_values]
    labels = labels.astype(jnp.int32)
    weights = weights.astype(jnp.float32)
    frozen = not any(trainable)

    def logits_of(values, h):
        return head(values, h).astype(jnp.float32)

    @jax.custom_vjp
    def rows(values, h):
        return _row_sums(logits_of, values, h, labels, weights, tiles, False)[0]

    def forward(values, h):
        if not frozen:  # the backward pass computes the head again
            return rows(values, h), (values, h)
        out, d_unit = _row_sums(logits_of, values, h, labels, weights, tiles, True)
        return out, (None, d_unit)

    def backward(saved, cotangent):
        values, saved_h = saved
        scale = jnp.einsum("blk,bk->bl", weights, cotangent[0])  # hits: not differentiable
        if frozen:
            d_h = saved_h.astype(jnp.float32) * scale[..., None]
            return [None] * len(dtypes), d_h.astype(saved_h.dtype)
        grads, d_h = _head_backward(logits_of, values, trainable, saved_h, labels, scale, tiles)
        it = iter(grads)
        return ([next(it).astype(dtype) if learns else None
                 for learns, dtype in zip(trainable, dtypes)], d_h.astype(saved_h.dtype))

    rows.defvjp(forward, backward)
    return rows(list(head_values), hidden)

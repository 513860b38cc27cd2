"""Model FLOPs per token, and the peak matmul FLOP/s of this machine's devices (measured), for
model FLOPs utilisation (MFU = achieved model FLOP/s / peak).

Model FLOPs follow PaLM's accounting (Chowdhery et al. 2022, appendix B): a weight costs 2 FLOPs
per token forward and 4 backward (activation and weight gradients), so 6 per trainable weight;
a frozen weight skips its weight gradient, so 4; attention adds 12 x layers x heads x head_dim x
sequence length per token. Rematerialisation and padding do not count.

That is what the runner's step does: LoRA is computed factored (runner/factored_lora.py), so a
frozen kernel under an adapter gets no weight gradient (Keras's merged LoRA computed one, 6 per
adapted weight, plus the merge), and the loss (runner/token_loss.py) computes each logit once
and the output layer's weight gradient only when it trains. Counted as weights but doing no
matmul: an untied input embedding's rows (a lookup), an overcount of 4 x vocabulary x hidden per
token for Llama, Mistral, Mixtral and Qwen 2.5 7B, not for the tied Gemma and small Qwen.
"""

from __future__ import annotations

import functools
import time


def flops_per_token(dims, total_params: int, trainable_params: int,
                    sequence_length: int, reference_forward: bool = False) -> float:
    """reference_forward: the step also runs the model forward once more (DPO's reference:
    2 FLOPs per parameter and a third of the attention's)."""
    frozen = total_params - trainable_params
    attention = 12 * dims.layers * dims.query_heads * dims.head_dim * sequence_length
    reference = 2 * total_params + attention / 3 if reference_forward else 0
    return 4 * frozen + 6 * trainable_params + attention + reference


@functools.lru_cache(maxsize=None)
def peak_matmul_flops(size: int = 2048, repeats: int = 5) -> float:
    """Best FLOP/s of a (size x size) float32 matmul sharded over every device (rows split):
    what this machine's devices deliver on the op that dominates training. Measured once per
    process."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = np.array(jax.devices())
    mesh = Mesh(devices, ("d",))
    rows = NamedSharding(mesh, PartitionSpec("d", None))
    whole = NamedSharding(mesh, PartitionSpec())
    size -= size % len(devices)
    a = jax.device_put(jnp.ones((size, size), jnp.float32), rows)
    b = jax.device_put(jnp.ones((size, size), jnp.float32), whole)
    matmul = jax.jit(lambda x, y: x @ y, out_shardings=rows)
    matmul(a, b).block_until_ready()  # compile
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best

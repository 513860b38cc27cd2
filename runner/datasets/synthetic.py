"""dataset=synthetic: seeded random token ids at the configured length, as MaxText offers.

For benchmarks and sizing: it needs no tokenizer, no files and no TensorFlow (the batches are
NumPy arrays that Keras feeds as they are), so a machine with only JAX and Keras can train a
real-size architecture. Batch k is a pure function of (seed, k), so a resumed run replays from
its checkpoint's step exactly; in a multi-process run each process yields its own rows of the
same global batch.
"""

from __future__ import annotations

from runner.data import Stream

NAME = "synthetic"


def is_synthetic(dataset_cfg) -> bool:
    return dataset_cfg.name == NAME and not dataset_cfg.files


def problems(dataset_cfg, max_steps, prompts) -> list[str]:
    """What a synthetic run cannot do, in the check stage's words."""
    found = []
    if not max_steps:
        found.append("dataset=synthetic is an endless stream of random tokens: set train.steps")
    if dataset_cfg.eval_split:
        found.append(f"dataset.eval_split={dataset_cfg.eval_split}: dataset=synthetic has no "
                     "splits to evaluate on; set dataset.eval_split=null")
    if dataset_cfg.format != "text":
        found.append(f"dataset.format={dataset_cfg.format}: dataset=synthetic is plain token "
                     "ids (loss on every token); set dataset.format=text")
    if dataset_cfg.packing:
        found.append("dataset.packing=true: dataset=synthetic rows are full of tokens already, "
                     "nothing to pack; set dataset.packing=false")
    return found


def batch(seed: int, step: int, batch_size: int, sequence_length: int, vocabulary_size: int,
          rows: slice = slice(None)):
    """Batch `step` of the stream: (x, y, sample_weight), `rows` of the global batch."""
    import numpy as np

    rng = np.random.default_rng([seed, step])
    # id 0 is padding in every family the runner knows; random ids stay clear of it
    ids = rng.integers(1, vocabulary_size, size=(batch_size, sequence_length + 1),
                       dtype=np.int32)[rows]
    x = {"token_ids": ids[:, :-1], "padding_mask": np.ones_like(ids[:, :-1], dtype=bool)}
    return x, ids[:, 1:], np.ones(ids[:, 1:].shape, dtype=np.float32)


def build(dataset_cfg, vocabulary_size: int, batch_size: int, sequence_length: int, steps: int,
          seed: int):
    """The training stream (runner.data.Stream) of `steps` batches."""
    import jax

    count, index = jax.process_count(), jax.process_index()
    local = batch_size // count  # the check stage made the batch divide the batch axis
    rows = slice(index * local, (index + 1) * local)

    def from_step(start: int):
        return (batch(seed, k, batch_size, sequence_length, vocabulary_size, rows)
                for k in range(start, steps))
    return Stream(dataset=None, steps=steps, steps_per_epoch=steps,
                  examples_per_epoch=steps * batch_size, replay=from_step)

"""dataset.packing=true: examples packed into full rows, each document attending to itself only.

Without packing every example fills a row of train.sequence_length and the rest is padding
(a third to a half of the slots in the shipped data). Packing places several examples in one
row by best-fit decreasing (each example, longest first, into the fullest row it still fits:
never more rows than first-fit decreasing), once per split, before shuffling; the rows are
then shuffled each epoch like examples are. A row carries, besides the token ids, targets and
loss weights of its documents side by side:
- segment ids (1, 2, ... per document, 0 for the padding at its end), from which the model's
  attention is masked per document (runner/documents.py);
- positions restarting at 0 at each document's start, for the rotary embeddings;
- a padding mask that is true everywhere: the padding is a segment of its own, so no query
  row is left with nothing to attend to, and its loss weight is 0.
A document's targets and loss weights are exactly those it has unpacked (runner/fixed_width.py),
so the loss tokens are the same; only their rows change.

Written here rather than taken from a library: tf.data has no packing with segment ids in a
released API (tensorflow-text and tf-models' packers are not what keras-hub models take), and
the rows must be a pure function of the data and the seed for exact reruns and resumes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from runner.documents import POSITIONS, SEGMENT_IDS


@dataclass(frozen=True)
class Packed:
    """A split's rows, as arrays of (rows, sequence_length)."""
    token_ids: object
    targets: object
    weights: object
    segment_ids: object
    positions: object
    documents: int

    @property
    def rows(self) -> int:
        return len(self.token_ids)

    @property
    def filled(self) -> float:
        """The share of the rows' slots holding a document's token."""
        return float((self.segment_ids > 0).mean()) if self.rows else 0.0

    def dataset(self):
        """tf.data of ((x, y, sample weight)) rows; x holds the segment ids and positions."""
        import numpy as np
        import tensorflow as tf

        x = {"token_ids": self.token_ids, "padding_mask": np.ones_like(self.token_ids, bool),
             SEGMENT_IDS: self.segment_ids, POSITIONS: self.positions}
        return tf.data.Dataset.from_tensor_slices((x, self.targets, self.weights))


def best_fit_decreasing(lengths, capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity`: longest first, each into
    the row with the least room that still holds it (ties: the earliest row). Deterministic."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    room: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in order:
        n = lengths[i]
        at = bisect.bisect_left(room, (n, -1))
        if at < len(room):
            left, row = room.pop(at)
            rows[row].append(i)
            bisect.insort(room, (left - n, row))
        else:
            rows.append([i])
            bisect.insort(room, (capacity - n, len(rows) - 1))
    return rows


def pack(examples, sequence_length: int, pad: int = 0) -> Packed:
    """Fixed-width examples ((x, y, sample weight) NumPy triples, x with token_ids and
    padding_mask) -> rows of sequence_length with their documents side by side, `pad` after
    them."""
    import numpy as np

    ids, targets, weights = [], [], []
    for x, y, w in examples:
        n = int(np.sum(x["padding_mask"]))
        ids.append(x["token_ids"][:n])
        targets.append(y[:n])
        weights.append(w[:n])
    rows = best_fit_decreasing([len(a) for a in ids], sequence_length)
    shape = (len(rows), sequence_length)
    out = {name: np.zeros(shape, dtype) for name, dtype in (
        ("ids", np.int32), ("targets", np.int32), ("weights", np.float32),
        ("segments", np.int32), ("positions", np.int32))}
    out["ids"][:] = pad
    for r, members in enumerate(rows):
        start = 0
        for segment, i in enumerate(sorted(members), start=1):  # documents in data order
            n = len(ids[i])
            where = slice(start, start + n)
            out["ids"][r, where], out["targets"][r, where] = ids[i], targets[i]
            out["weights"][r, where], out["segments"][r, where] = weights[i], segment
            out["positions"][r, where] = np.arange(n)
            start += n
        out["positions"][r, start:] = np.arange(sequence_length - start)
    return Packed(out["ids"], out["targets"], out["weights"], out["segments"],
                  out["positions"], len(ids))


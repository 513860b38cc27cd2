"""dataset.packing: examples packed into rows (runner/packing.py) that the model reads as
separate documents (runner/documents.py). For every family, a packed row's logits equal each
document's logits alone, sliding windows included; the loss tokens are the same packed or not;
a packed run trains, evaluates and resumes from the command line."""

import numpy as np
import pytest

import hf_checkpoints
from conftest import compose
from tiny_models import tiny_causal_lm

MODEL_TYPES = sorted(hf_checkpoints.KINDS)


def test_best_fit_decreasing_places_every_example_once_within_the_rows():
    from runner.packing import best_fit_decreasing

    lengths = list(np.random.default_rng(0).integers(1, 64, 500))
    rows = best_fit_decreasing(lengths, 64)
    placed = sorted(i for row in rows for i in row)
    assert placed == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    # no worse than first-fit decreasing, and near the bound of total / capacity
    first_fit = []
    for n in sorted(lengths, reverse=True):
        at = next((k for k, used in enumerate(first_fit) if used + n <= 64), None)
        if at is None:
            first_fit.append(n)
        else:
            first_fit[at] += n
    assert len(rows) <= len(first_fit)
    assert len(rows) <= sum(lengths) / 64 * 1.1 + 1
    assert best_fit_decreasing(lengths, 64) == rows  # deterministic


def _example(ids, weights, width):
    n = len(ids)
    pad = width - n
    x = {"token_ids": np.pad(np.asarray(ids[:-1], "int32"), (0, pad)),
         "padding_mask": np.arange(width - 1) < n - 1}
    return (x, np.pad(np.asarray(ids[1:], "int32"), (0, pad)),
            np.pad(np.asarray(weights[1:], "float32"), (0, pad)))


def test_packed_rows_keep_every_document_and_its_loss_weights():
    from runner.packing import pack

    rng = np.random.default_rng(0)
    docs = []
    for n in (9, 5, 12, 3, 7, 16):
        ids = rng.integers(3, 100, n)
        weights = (rng.random(n) > 0.4).astype("float32")
        docs.append((ids, weights))
    packed = pack([_example(i, w, 17) for i, w in docs], 16, pad=0)
    assert packed.documents == 6 and packed.rows < 6
    seen = []
    for r in range(packed.rows):
        segments = packed.segment_ids[r]
        for s in sorted(set(segments) - {0}):
            where = segments == s
            assert list(packed.positions[r][where]) == list(range(where.sum()))
            seen.append((tuple(packed.token_ids[r][where]), tuple(packed.targets[r][where]),
                         tuple(packed.weights[r][where])))
        assert packed.weights[r][segments == 0].sum() == 0
    expected = [(tuple(i[:-1]), tuple(i[1:]), tuple(w[1:])) for i, w in docs]
    assert sorted(seen) == sorted(expected)
    assert packed.filled == pytest.approx(sum(len(i) - 1 for i, _ in docs) / packed.token_ids.size)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_a_packed_row_gives_each_document_its_own_logits(model_type):
    """Three documents in one row (and padding): each one's logits equal its logits alone, with
    sliding windows shorter than the documents where the family has them."""
    from runner import documents

    windowed = {"sliding_window": 4} if model_type in (
        "gemma2", "gemma3_text", "mistral", "mixtral") else {}
    lm = tiny_causal_lm(model_type, **windowed)
    documents.prepare(lm.backbone)
    rng = np.random.default_rng(0)
    docs = [rng.integers(3, hf_checkpoints.VOCAB, n).astype("int32") for n in (7, 5, 9)]
    width = 24
    ids = np.concatenate(docs + [np.zeros(width - 21, "int32")])[None]
    segments = np.concatenate([np.full(len(d), k + 1) for k, d in enumerate(docs)]
                              + [np.zeros(width - 21)]).astype("int32")[None]
    positions = np.concatenate([np.arange(len(d)) for d in docs]
                               + [np.arange(width - 21)]).astype("int32")[None]
    with documents.documents(segments, positions):
        packed = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}))
    start = 0
    for d in docs:
        alone = np.asarray(lm({"token_ids": d[None], "padding_mask": np.ones((1, len(d)), bool)}))
        assert np.allclose(packed[0, start:start + len(d)], alone[0], rtol=1e-5, atol=1e-5), \
            (model_type, start, np.abs(packed[0, start:start + len(d)] - alone[0]).max())
        start += len(d)
    # outside the context the same layers are keras-hub's own: the documents see each other
    mixed = np.asarray(lm({"token_ids": ids, "padding_mask": np.ones_like(ids, bool)}))
    assert not np.allclose(mixed[0, 7:12], packed[0, 7:12], atol=1e-4)


@pytest.mark.parametrize("name", ["tiny_chats", "tiny_prompts", "tiny_reviews"])
def test_packing_the_shipped_data_keeps_its_loss_tokens_in_fewer_rows(name):
    """Chat (assistant-only masks), prompt/response and plain text: the same loss tokens,
    packed into fewer rows."""
    from runner import data, model

    cfg = compose(f"dataset={name}", "train.sequence_length=128")
    preprocessor = model.load_preprocessor(cfg.model)
    preprocessor.sequence_length = 128
    totals = {}
    for packing in (False, True):
        cfg.dataset.packing = packing
        # batches of one: every example (or row) is in the epoch
        stream = data.build(cfg.dataset, preprocessor, 1, 128, 1, None, 0)
        weights = [float(w.numpy().sum()) for _, _, w in stream.dataset]
        totals[packing] = (sum(weights), stream.steps, stream.counts)
    (plain, plain_steps, _), (packed, packed_steps, counts) = totals[False], totals[True]
    assert packed == plain  # the same loss tokens
    assert packed_steps == counts.rows < plain_steps
    assert counts.rows and 0 < counts.filled <= 1

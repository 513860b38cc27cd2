"""The input pipeline on token ids: the prompt carries zero loss weight, the response (and EOS)
full weight, padding none; too-long pairs are dropped or truncated as configured."""

import numpy as np
import pytest

from conftest import compose


@pytest.fixture(scope="module")
def preprocessor():
    import keras_hub

    from runner.model import SHIPPED_PRESETS

    return keras_hub.models.CausalLMPreprocessor.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))


def _first_batch(cfg, preprocessor, sequence_length=64):
    from runner import data

    preprocessor.sequence_length = sequence_length
    stream = data.build(cfg.dataset, preprocessor, 4, sequence_length, 1, None, 0)
    return stream, next(iter(stream.dataset))


def test_prompt_tokens_carry_zero_weight(preprocessor):
    from runner.datasets.opening import open_dataset

    cfg = compose("dataset=tiny_translations", "dataset.shuffle_buffer=1")  # keeps TFDS order
    _, (x, y, w) = _first_batch(cfg, preprocessor)
    example = next(iter(open_dataset(cfg.dataset).builder.as_dataset(split="train")))
    first = {k: example[k].numpy().decode() for k in ("src", "dst")}
    tok = preprocessor.tokenizer
    prompt = list(np.asarray(tok("Translate this into French:\n" + first["src"] + "\n")))
    response = list(np.asarray(tok(first["dst"]))) + [tok.end_token_id]
    ids, y0, w0 = (np.asarray(t[0]) for t in (x["token_ids"], y, w))
    n = 1 + len(prompt) + len(response)
    assert list(ids[:n]) == [tok.start_token_id] + prompt + response
    assert list(y0[:n - 1]) == prompt + response
    # the targets that are prompt tokens weigh 0; the response and EOS weigh 1; padding 0
    assert list(w0[:n - 1]) == [0.0] * len(prompt) + [1.0] * len(response)
    assert not w0[n - 1:].any()
    assert list(np.asarray(x["padding_mask"][0])) == [True] * n + [False] * (64 - n)
    assert float(w0.sum()) == len(response)


def test_too_long_pairs_are_dropped_or_truncated(preprocessor):
    dropped, _ = _first_batch(compose("dataset=tiny_translations", "dataset.too_long=drop"),
                              preprocessor, sequence_length=54)
    kept, (x, y, w) = _first_batch(compose("dataset=tiny_translations",
                                           "dataset.too_long=truncate"), preprocessor,
                                   sequence_length=54)
    assert kept.examples_per_epoch == 1200
    assert 0 < dropped.examples_per_epoch < 1200
    assert x["token_ids"].shape == (4, 54) and w.shape == (4, 54)


def test_text_format_weights_every_real_token(preprocessor):
    _, (x, y, w) = _first_batch(compose(), preprocessor)
    mask, w = np.asarray(x["padding_mask"]), np.asarray(w)
    # keras-hub's packing: weight 1 on every target that is a real token, 0 on padding
    assert set(np.unique(w)) == {0.0, 1.0}
    # the target at t is the token at t + 1: weighted exactly when that token is real
    assert np.array_equal(w[:, :-1], mask[:, 1:].astype("float32"))


def test_split_slicing_and_take(preprocessor):
    # a slice is quoted on the command line: Hydra's grammar reads [ as a list
    sliced, _ = _first_batch(compose("dataset.split='train[:25%]'"), preprocessor)
    assert sliced.examples_per_epoch == 400 and sliced.steps_per_epoch == 100
    taken, _ = _first_batch(compose("dataset.take=40"), preprocessor)
    assert taken.examples_per_epoch == 40 and taken.steps == 10


@pytest.mark.parametrize("fmt", ["text", "prompt_response", "chat"])
def test_examples_longer_than_the_sequence_are_counted_per_split(preprocessor, tmp_path, fmt):
    """One 2,000-word line among short ones: truncate says how many tokens it lost, drop how
    many examples it left out; the eval split is counted on its own."""
    import json

    long_text = " ".join(["the film was good"] * 500)
    short = ["a good film", "the river town", "I liked it", "a quiet lake"] * 2
    if fmt == "text":
        records, overrides = [{"text": t} for t in short + [long_text]], []
    elif fmt == "prompt_response":
        records = [{"q": "Say:", "a": t} for t in short + [long_text]]
        overrides = ["dataset.format=prompt_response", "dataset.prompt_template='{q}'",
                     "dataset.response_template='{a}'"]
    else:
        records = [{"messages": [{"role": "user", "content": "Say:"},
                                 {"role": "assistant", "content": t}]} for t in short + [long_text]]
        overrides = ["dataset.format=chat"]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:4]))
    from runner import data

    files = [f"dataset.files={tmp_path / 'train.jsonl'}", f"dataset.eval_files={tmp_path / 'dev.jsonl'}",
             "dataset.eval_split=validation", f"dataset.data_dir={tmp_path / 'prepared'}"]
    preprocessor.sequence_length = 32
    cut = data.build(compose(*files, *overrides).dataset, preprocessor, 4, 32, 1, None, 0)
    assert (cut.counts.examples, cut.counts.too_long, cut.counts.dropped) == (9, 1, 0)
    tokens = len(np.asarray(preprocessor.tokenizer(long_text)))
    assert tokens > 1000 and tokens - 33 <= cut.counts.tokens_cut <= tokens  # all but a window
    assert "1 (11.1%) longer than train.sequence_length=32: cut to fit" in \
        cut.counts.line("x", 32)
    dropped = data.build(compose(*files, *overrides, "dataset.too_long=drop").dataset,
                         preprocessor, 4, 32, 1, None, 0)
    assert (dropped.counts.too_long, dropped.counts.dropped, dropped.counts.kept) == (1, 1, 8)
    assert dropped.examples_per_epoch == 8
    held_out = data.build_eval(compose(*files, *overrides).dataset, preprocessor, 4, 32, None)
    assert (held_out.counts.examples, held_out.counts.too_long) == (4, 0)

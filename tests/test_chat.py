"""format=chat against the publishers' own chat templates, applied by Hugging Face transformers
on checkpoints the tests make (tests/hf_checkpoints.py): the same text for every family, the same
token ids where keras-hub's tokenizer splits text as transformers' does, the loss weight on
exactly the assistant turns (content and end-of-turn token), and the same refusals."""

import functools

import numpy as np
import pytest

import chat_templates
import hf_checkpoints

CONVERSATIONS = [
    [{"role": "user", "content": "alpha beta the quick fox"},
     {"role": "assistant", "content": " gamma 14 the lazy dog "},
     {"role": "user", "content": "delta\nepsilon"},
     {"role": "assistant", "content": "the brown fox jumps over 21"}],
    [{"role": "system", "content": "the lazy dog"},
     {"role": "user", "content": "zeta eta"},
     {"role": "assistant", "content": "theta iota kappa"}],
    [{"role": "user", "content": "over the dog"},
     {"role": "assistant", "content": "<think>\nthe fox\n</think>\n\njumps 7"}],
]
# What transformers refuses for some templates (system role, turn order); the runner must too.
REFUSED = [
    [{"role": "assistant", "content": "the fox"}, {"role": "user", "content": "the dog"}],
    [{"role": "user", "content": "the fox"}, {"role": "user", "content": "the dog"}],
]
# Where an assistant turn starts (after its header) and ends (after its end token), per template.
ASSISTANT = {"gemma": ("<start_of_turn>model\n", "<end_of_turn>"),
             "gemma3": ("<start_of_turn>model\n", "<end_of_turn>"),
             "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
             "qwen2.5": ("<|im_start|>assistant\n", "<|im_end|>"),
             "qwen3": ("<|im_start|>assistant\n", "<|im_end|>")}
# Token equality: every family but Mistral, whose SentencePiece tokenizer keras-hub runs with a
# dummy prefix on each text chunk where transformers' does not after a special token.
TOKEN_KINDS = ["gemma", "gemma3_text", "llama", "qwen2", "qwen3"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat_checkpoints")
    return {kind: hf_checkpoints.make_tokenizer(kind, root / kind)
            for kind in chat_templates.BY_KIND}


def _hf_tokenizer(path, kind):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    tok.chat_template = chat_templates.BY_KIND[kind][1]
    return tok


def _hf_render(tok, conversation, tokenize):
    try:
        out = tok.apply_chat_template(conversation, tokenize=tokenize)
    except Exception as exc:  # jinja's raise_exception: TemplateError
        return exc
    return list(out["input_ids"] if hasattr(out, "keys") else out) if tokenize else out


def _runner_text(conversation, template, tok):
    from runner import chat

    names = {chat.BOS: tok.bos_token, chat.EOS: tok.eos_token}
    return "".join(names.get(p.text, p.text) for p in chat.render(conversation, template))


@pytest.mark.parametrize("kind", sorted(chat_templates.BY_KIND))
def test_rendered_text_is_the_publishers(kind, checkpoints):
    from runner import chat

    template = chat_templates.BY_KIND[kind][0]
    tok = _hf_tokenizer(checkpoints[kind], kind)
    rendered = 0
    for conversation in CONVERSATIONS + REFUSED:
        expected = _hf_render(tok, conversation, tokenize=False)
        if isinstance(expected, Exception):
            with pytest.raises(chat.ChatError):
                chat.render(conversation, template)
        else:
            assert _runner_text(conversation, template, tok) == expected
            rendered += 1
    assert rendered >= 2


@functools.cache
def _keras_tokenizer(path):
    from runner.hf import folder
    from runner.hf.load import preprocessor

    family = folder.family_of(folder.read_config(path), str(path))
    return preprocessor(str(path), family).tokenizer


def _runner_ids_and_weights(path, template, conversations):
    """The pipeline's (ids, weights) per conversation: one tf.data map, traced once."""
    import tensorflow as tf

    from runner.chat_data import special_ids, token_ids_and_weights

    tokenizer = _keras_tokenizer(path)
    ids = special_ids(tokenizer, template)
    spec = tf.TensorSpec([None], tf.string)
    ds = tf.data.Dataset.from_generator(
        lambda: ({"role": [m["role"] for m in c], "content": [m["content"] for m in c]}
                 for c in conversations), output_signature={"role": spec, "content": spec})
    ds = ds.map(lambda m: token_ids_and_weights(m, tokenizer, template, ids))
    return [(t.numpy().tolist(), w.numpy()) for t, w in ds]


def _expected_weights(tok, text, template):
    """1 for each token inside an assistant turn: after its header, up to its end token."""
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    header, end = ASSISTANT[template]
    spans, cursor = [], 0
    while (start := text.find(header, cursor)) >= 0:
        stop = text.index(end, start + len(header)) + len(end)
        spans.append((start + len(header), stop))
        cursor = stop
    weights = [float(any(a <= s and e <= b for a, b in spans)) for s, e in enc["offset_mapping"]]
    return enc["input_ids"], np.array(weights)


@pytest.mark.slow  # traces keras-hub's tokenizers in tf.data: ~8 s a family
@pytest.mark.parametrize("kind", TOKEN_KINDS)
def test_token_ids_and_assistant_mask_match_transformers(kind, checkpoints):
    template = chat_templates.BY_KIND[kind][0]
    tok = _hf_tokenizer(checkpoints[kind], kind)
    accepted = [c for c in CONVERSATIONS
                if not isinstance(_hf_render(tok, c, tokenize=False), Exception)]
    assert len(accepted) >= 2
    results = _runner_ids_and_weights(checkpoints[kind], template, accepted)
    for conversation, (ids, weights) in zip(accepted, results):
        expected_ids = _hf_render(tok, conversation, tokenize=True)
        assert ids == expected_ids, tok.convert_ids_to_tokens(ids)
        text = _hf_render(tok, conversation, tokenize=False)
        offset_ids, expected_weights = _expected_weights(tok, text, template)
        assert offset_ids == expected_ids  # the offsets describe the same tokens
        np.testing.assert_array_equal(weights, expected_weights)
        assert 0 < weights.sum() < len(weights)


def test_family_templates_and_tokenizer_tokens():
    from runner import chat

    assert chat.template_for("gemma", None) == "gemma"
    assert chat.template_for("qwen2", None) == "qwen2.5"
    with pytest.raises(ValueError, match="dataset.chat_template=llama3 is not a template of the "
                                         "gemma family"):
        chat.template_for("gemma", "llama3")
    with pytest.raises(chat.ChatError, match="role 'tool'"):
        chat.render([{"role": "tool", "content": "x"}], "chatml")


def test_chat_batches_weight_only_assistant_targets():
    """Through data.build on the shipped conversations (TFDS order kept): the targets with loss
    weight 1 are, run by run, each assistant turn's content followed by <end_of_turn>."""
    import keras_hub

    from conftest import compose
    from runner import data
    from runner.datasets.opening import open_dataset
    from runner.datasets.problems import messages_of
    from runner.model import SHIPPED_PRESETS

    pre = keras_hub.models.CausalLMPreprocessor.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))
    cfg = compose("dataset=tiny_chats", "dataset.shuffle_buffer=1", "dataset.take=8")
    stream = data.build(cfg.dataset, pre, 4, 256, 1, None, 0)
    assert stream.examples_per_epoch == 8  # none dropped: the order below is the batches'
    x, y, w = next(iter(stream.dataset))
    source = open_dataset(cfg.dataset).builder.as_dataset(split="train_sft", shuffle_files=False)
    tok = pre.tokenizer
    end = tok.token_to_id("<end_of_turn>")
    for example, targets, weights in zip(source.take(4).as_numpy_iterator(), np.asarray(y),
                                         np.asarray(w)):
        answers = [m["content"] for m in messages_of(example["messages"])
                   if m["role"] == "assistant"]
        runs, run = [], []
        for target, weight in zip(targets, weights):
            if weight:
                run.append(int(target))
            elif run:
                runs.append(run)
                run = []
        assert len(runs) == len(answers)
        for run, answer in zip(runs, answers):
            assert run[-1] == end
            assert run[:-1] == list(np.asarray(tok(answer.strip())))


def test_sharegpt_records_train_as_the_same_conversations_with_no_key_set(tmp_path):
    """Axolotl's and LLaMA-Factory's ShareGPT shape ("conversations", "from"/"value", speakers
    human/gpt/system) needs only dataset.format=chat: the batches (token ids, targets, loss
    mask) are exactly those of the same conversations written as messages."""
    import json

    import keras_hub
    import tensorflow as tf

    from conftest import compose
    from runner import data
    from runner.checks import run_checks
    from runner.model import SHIPPED_PRESETS

    conversations = [  # Gemma 1/2 take no system message; dataset.chat_template=gemma3 does
        [{"role": "system", "content": "You are brief."},
         {"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "The Loire."},
         {"role": "user", "content": "And a town?"}, {"role": "assistant", "content": "Tours."}],
        [{"role": "user", "content": "Is the film good?"},
         {"role": "assistant", "content": "I loved every minute of it!"}],
    ] * 4
    speakers = {"system": "system", "user": "human", "assistant": "gpt"}
    (tmp_path / "messages.jsonl").write_text("".join(
        json.dumps({"messages": c}) + "\n" for c in conversations))
    (tmp_path / "sharegpt.jsonl").write_text("".join(json.dumps({"id": i, "conversations": [
        {"from": speakers[m["role"]], "value": m["content"]} for m in c]}) + "\n"
        for i, c in enumerate(conversations)))
    pre = keras_hub.models.CausalLMPreprocessor.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))
    batches = {}
    for name in ("messages", "sharegpt"):
        cfg = compose(f"dataset.files={tmp_path / name}.jsonl", "dataset.format=chat",
                      "dataset.chat_template=gemma3", "dataset.shuffle_buffer=1",
                      f"dataset.data_dir={tmp_path / 'prepared'}")
        assert run_checks(cfg, 8, for_training=False).problems == []
        stream = data.build(cfg.dataset, pre, 4, 64, 1, None, 0)
        batches[name] = [[np.asarray(t) for t in tf.nest.flatten(b)]
                         for b in stream.dataset.take(2)]
    assert len(batches["sharegpt"]) == 2
    for ours, theirs in zip(batches["messages"], batches["sharegpt"]):
        assert len(ours) == len(theirs) == 4  # token ids, padding mask, targets, loss mask
        for a, b in zip(ours, theirs):
            assert np.array_equal(a, b)
    assert batches["sharegpt"][0][-1].sum() > 0  # assistant tokens carry the loss


def test_a_field_that_holds_no_messages_is_refused_with_the_fix(tmp_path):
    import json

    from conftest import compose
    from runner.checks import run_checks

    (tmp_path / "d.jsonl").write_text(json.dumps({"conversations": "just text"}) + "\n")
    cfg = compose(f"dataset.files={tmp_path / 'd.jsonl'}", "dataset.format=chat",
                  "dataset.messages_field=conversations",
                  f"dataset.data_dir={tmp_path / 'prepared'}")
    problems = run_checks(cfg, 8, for_training=False).problems
    assert problems and "holds text, not a list of messages" in problems[0]
    assert "ShareGPT" in problems[0] and "format=text or prompt_response" in problems[0]


def test_only_speaker_value_lists_are_sharegpt():
    from runner.datasets.user_data import _is_messages

    assert _is_messages([{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}])
    assert _is_messages([{"role": "user", "content": "hi"}])
    assert not _is_messages([{"from": "en", "to": "fr"}])  # a list of other objects stays data
    assert not _is_messages([{"from": 1, "value": "x"}])
    assert not _is_messages([])

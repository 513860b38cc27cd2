"""format=preference: pairs into token rows (chosen and rejected side by side, the loss on the
answer only), and every record that cannot teach a preference named with its file and line
before any weight loads."""

import json

import numpy as np
import pytest

from conftest import compose, run_cli

USER = {"role": "user", "content": "Review the film."}


def _say(text):
    return {"role": "assistant", "content": text}


TEXT = [{"prompt": f"Review film {i}. ", "chosen": f"the film {i} was good, I liked it",
         "rejected": "the heron feeds mainly on fish"} for i in range(8)]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _cfg(tmp_path, records, *extra):
    files = _write(tmp_path / "p.jsonl", records)
    return compose("objective=dpo", f"dataset.files={files}", "dataset.format=preference",
                   f"dataset.data_dir={tmp_path / 'prepared'}", *extra)


def _stream(cfg, batch=4, length=32):
    import keras_hub

    from runner import data
    from runner.model import SHIPPED_PRESETS

    pre = keras_hub.models.CausalLMPreprocessor.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))
    pre.sequence_length = length
    return data.build(cfg.dataset, pre, batch, length, 1, None, 0), pre.tokenizer


def test_text_pairs_become_two_rows_each_with_the_loss_on_the_answer(tmp_path):
    stream, tokenizer = _stream(_cfg(tmp_path, TEXT))
    x, y, w = next(iter(stream.dataset))
    assert x["token_ids"].shape == (8, 32)  # 4 pairs, 2 rows each
    ids, y, w = x["token_ids"].numpy(), y.numpy(), w.numpy()
    for pair in range(4):
        chosen, rejected = (tokenizer.detokenize(y[r][w[r] > 0]) for r in (2 * pair,
                                                                             2 * pair + 1))
        record = next(r for r in TEXT if r["chosen"] in str(chosen))
        # the answer and the end token, nothing of the prompt
        assert tokenizer.detokenize(tokenizer(record["chosen"])) in str(chosen)
        assert "Review" not in str(chosen) and "heron" in str(rejected)
        assert y[2 * pair][w[2 * pair] > 0][-1] == tokenizer.end_token_id
        # the two rows share the prompt: the same ids up to the first answer token
        start = int(np.argmax(w[2 * pair] > 0))
        assert (ids[2 * pair][:start + 1] == ids[2 * pair + 1][:start + 1]).all()


def test_a_multi_turn_prompts_own_assistant_turn_costs_no_loss(tmp_path):
    earlier = [USER, _say("an earlier answer"), {"role": "user", "content": "Again."}]
    records = [{"chosen": earlier + [_say(f"the film {i} was good")],
                "rejected": earlier + [_say("the heron feeds on fish")]} for i in range(4)]
    stream, tokenizer = _stream(_cfg(tmp_path, records), batch=2, length=64)
    x, y, w = next(iter(stream.dataset))
    trained = str(tokenizer.detokenize(y.numpy()[0][w.numpy()[0] > 0]))
    assert "the film" in trained and "earlier" not in trained
    assert "<end_of_turn>" in trained  # the answer's turn ends, as format=chat trains it
    whole = str(tokenizer.detokenize(x["token_ids"].numpy()[0]))
    assert "an earlier answer" in whole  # in the rows, as context


def test_a_pair_whose_prompt_fills_the_sequence_is_left_out_and_counted(tmp_path):
    records = TEXT[:6] + [dict(TEXT[0], prompt="word " * 40)] * 2
    stream, _ = _stream(_cfg(tmp_path, records), batch=2, length=16)
    counts = stream.counts
    assert counts.no_room == 2 and counts.kept == 6
    assert "2 pairs left out: their prompt leaves no answer token" in counts.line("d", 16)


@pytest.mark.parametrize("records,words", [
    ([TEXT[0], dict(TEXT[1], rejected=TEXT[1]["chosen"])], ["p.jsonl:2:", "are the same"]),
    ([TEXT[0], TEXT[1], dict(TEXT[2], chosen="  ")], ["p.jsonl:3:", "chosen answer is empty"]),
    ([TEXT[0], {"prompt": "a", "chosen": "b"}], ["p.jsonl:2:", 'has no "rejected" field']),
    ([{"prompt": [USER], "chosen": [_say("a")], "rejected": [USER]}],
     ["p.jsonl:1:", "rejected answer must be assistant messages"]),
    ([{"chosen": [USER, _say("a")], "rejected": [USER, _say("a"), _say("b")]}],
     ["p.jsonl:1:", "start of the other"]),
], ids=["same", "empty", "missing", "not_assistant", "prefix"])
def test_a_record_that_cannot_teach_a_preference_is_named_before_weights(tmp_path, records,
                                                                         words):
    from runner.checks import run_checks

    problems = run_checks(_cfg(tmp_path, records), 8, for_training=False).problems
    assert problems
    for word in words:
        assert word in problems[0], problems[0]


@pytest.mark.parametrize("overrides,words", [
    (["objective=sft"], ["dataset.format=preference", "objective=dpo, orpo or simpo"]),
    (["dataset.format=text"], ["objective=dpo trains on preference pairs"]),
    (["dataset.packing=true"], ["dataset.packing=true with objective=dpo"]),
    (["objective=orpo", "objective.label_smoothing=0.1"],
     ["objective.label_smoothing=0.1 is not used by objective=orpo"]),
    (["objective.gamma=0.5"], ["objective.gamma=0.5 is not used by objective=dpo"]),
])
def test_objective_and_data_that_do_not_go_together_are_one_line(tmp_path, overrides, words):
    from runner.checks import run_checks

    problems = run_checks(_cfg(tmp_path, TEXT, *overrides), 8, for_training=False).problems
    assert any(all(w in p for w in words) for p in problems), problems


def test_a_bad_pair_stops_the_run_with_exit_2_and_one_line(workdir):
    from runner.rundir import SUMMARY, read_json

    _write(workdir / "prefs.jsonl", TEXT[:3] + [dict(TEXT[3], chosen="")])
    proc = run_cli("objective=dpo", "dataset.files=prefs.jsonl", "dataset.format=preference",
                   "hydra.run.dir=bad", "tracking.mode=disabled", cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "prefs.jsonl:4: the chosen answer is empty" in errors[0], \
        proc.stderr[-800:]
    summary = workdir / "bad" / SUMMARY
    assert not summary.exists() or read_json(summary)["status"] != "finished"

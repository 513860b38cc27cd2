"""runner/preference_records.py: the preference shapes TRL reads, read as TRL's own
maybe_extract_prompt reads them, and a bad record refused in one line naming where it is."""

import pytest
from trl.data_utils import maybe_extract_prompt

from runner.preference_records import RecordError, pair_of


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


SKY = [_user("What color is the sky?")]
SHAPES = {
    "text, explicit prompt": {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    "text, implicit prompt": {"chosen": "The sky is blue.", "rejected": "The sky is green."},
    "messages, explicit prompt": {"prompt": SKY, "chosen": [_assistant("It is blue.")],
                                  "rejected": [_assistant("It is green.")]},
    "messages, implicit prompt": {"chosen": SKY + [_assistant("It is blue.")],
                                  "rejected": SKY + [_assistant("It is green.")]},
    # HuggingFaceH4/ultrafeedback_binarized: a text prompt beside whole conversations
    "ultrafeedback_binarized": {"prompt": "What color is the sky?",
                                "chosen": SKY + [_assistant("It is blue.")],
                                "rejected": SKY + [_assistant("It is green.")]},
    "multi-turn, implicit": {
        "chosen": SKY + [_assistant("Blue."), _user("And at night?"), _assistant("Black.")],
        "rejected": SKY + [_assistant("Blue."), _user("And at night?"), _assistant("Blue.")]},
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shape_reads_as_trl_reads_it(shape):
    record = SHAPES[shape]
    pair = pair_of(record, "prefs.jsonl:1")
    theirs = maybe_extract_prompt(dict(record))
    assert (pair.prompt, pair.chosen, pair.rejected) == (
        theirs["prompt"], theirs["chosen"], theirs["rejected"])
    assert pair.conversational == isinstance(record["chosen"], list)


@pytest.mark.parametrize("record, words", [
    ({"prompt": "Q", "chosen": " a"}, "prefs.jsonl:7: no 'rejected' field"),
    ({"prompt": "Q", "chosen": " a", "rejected": " a"}, "chosen and rejected are the same"),
    ({"chosen": "Q a", "rejected": "Q a"}, "chosen and rejected are the same"),
    ({"chosen": "Q a", "rejected": "Q a and more"}, "is the start of the other"),
    ({"prompt": "Q", "chosen": "  ", "rejected": " b"}, "the chosen answer is empty"),
    ({"prompt": "Q", "chosen": 3, "rejected": " b"}, "chosen is neither text nor a list"),
    ({"prompt": "Q", "chosen": " a", "rejected": [_assistant("b")]}, "both be text or both"),
    ({"chosen": [_user("Q"), _assistant("a")], "rejected": [_user("P"), _assistant("b")]},
     "must be assistant messages after the prompt"),
    ({"chosen": SKY + [_assistant("")], "rejected": SKY + [_assistant("x")]},
     "the chosen answer is empty"),
    ({"prompt": [_user("Q")], "chosen": " a", "rejected": " b"},
     "the prompt is a list of messages but chosen and rejected are text"),
])
def test_a_bad_record_is_one_line_naming_its_place(record, words):
    with pytest.raises(RecordError) as caught:
        pair_of(record, "prefs.jsonl:7")
    message = str(caught.value)
    assert message.startswith("prefs.jsonl:7: ") and words in message
    assert "\n" not in message

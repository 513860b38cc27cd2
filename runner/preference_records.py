"""One preference record -> (prompt, chosen, rejected), in the shapes preference data comes in,
with what is wrong with a record as one line.

The shapes are TRL's four (trl/data_utils.py): prompt / chosen / rejected as text, or as message
lists (the prompt the conversation so far, chosen and rejected the assistant's answers); and
chosen / rejected alone, each the whole text or conversation, the prompt being their longest
shared prefix (`extract_prompt`). A text `prompt` beside conversations (the shape of
HuggingFaceH4/ultrafeedback_binarized, whose conversations repeat the prompt as their first
turn) is read as TRL's `maybe_extract_prompt` reads it: the prompt is the shared prefix of the
conversations. tests/test_preference_records.py checks every shape against those functions.

Where TRL would still train (a pair whose answers are the same teaches nothing and gives every
objective a zero gradient; an empty answer; a conversation whose answer is not the assistant's),
a record is refused here with its place (file:line) so the user can fix the data before
weights load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

Side = Union[str, list]  # text, or a list of {"role", "content"} messages


class RecordError(ValueError):
    """What is wrong with one record, as one line that starts with where it is."""


@dataclass(frozen=True)
class Pair:
    prompt: Side
    chosen: Side
    rejected: Side

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value)


def _kind(value, field: str, where: str) -> str:
    if isinstance(value, str):
        return "text"
    if _is_messages(value):
        return "messages"
    raise RecordError(f"{where}: {field} is neither text nor a list of messages with a role and "
                      f"a content (found {type(value).__name__})")


def _shared_prefix(chosen: Side, rejected: Side, where: str) -> int:
    """Where the answers part: TRL's extract_prompt (for text, a space before the first
    differing character goes with the answers)."""
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if idx > 0 and chosen[idx - 1] == " ":
                idx -= 1
            return idx
    raise RecordError(f"{where}: chosen and rejected are the same" if len(chosen) == len(rejected)
                      else f"{where}: one of chosen and rejected is the start of the other, so "
                           "it has no answer of its own; give the prompt as a field")


def pair_of(record: dict, where: str) -> Pair:
    """The record's prompt, chosen and rejected answers; RecordError naming `where` if it has
    none of the shapes or its pair cannot teach a preference."""
    for field in ("chosen", "rejected"):
        if field not in record or record[field] is None:
            raise RecordError(f"{where}: no {field!r} field; a preference record has chosen and "
                              "rejected (and a prompt, unless both hold the whole conversation)")
    chosen, rejected = record["chosen"], record["rejected"]
    kind = _kind(chosen, "chosen", where)
    if _kind(rejected, "rejected", where) != kind:
        raise RecordError(f"{where}: chosen and rejected must both be text or both messages")
    prompt = record.get("prompt")
    if prompt is not None and _kind(prompt, "prompt", where) == "messages" and kind == "text":
        raise RecordError(f"{where}: the prompt is a list of messages but chosen and rejected are "
                          "text; give the answers as assistant messages, or the prompt as text")
    if prompt is not None and _kind(prompt, "prompt", where) == kind:
        pair = Pair(prompt, chosen, rejected)
    else:  # no prompt, or a text prompt beside whole conversations: their shared start
        idx = _shared_prefix(chosen, rejected, where)
        pair = Pair(chosen[:idx], chosen[idx:], rejected[idx:])
    return _checked(pair, where)


def _checked(pair: Pair, where: str) -> Pair:
    if pair.chosen == pair.rejected:
        raise RecordError(f"{where}: chosen and rejected are the same")
    for field in ("chosen", "rejected"):
        answer = getattr(pair, field)
        if pair.conversational:
            if not answer or any(m["role"] != "assistant" for m in answer):
                raise RecordError(f"{where}: the {field} answer must be assistant messages "
                                  f"after the prompt (found roles "
                                  f"{[m['role'] for m in answer]})")
            empty = all(not m["content"].strip() for m in answer)
        else:
            empty = not answer.strip()
        if empty:
            raise RecordError(f"{where}: the {field} answer is empty")
    return pair

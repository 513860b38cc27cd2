"""Conversations rendered in a model family's own chat format, with the loss on assistant turns.

A template here is the Python twin of the Jinja chat template the model's publisher ships in
tokenizer_config.json (tests/test_chat.py proves them token for token equal through
transformers' apply_chat_template). Rendering gives pieces: text, or a special token by name,
each marked trainable or not. The data pipeline (runner.data) joins the text between two special
tokens into one chunk and tokenizes it whole, exactly as a Hugging Face tokenizer splits a
rendered conversation on its special tokens, so the ids are the publisher's.

What the loss covers: what the model must produce in an assistant turn, i.e. the turn's content
and the token that ends the turn (<end_of_turn>, <|eot_id|>, <|im_end|>, </s>), not the role
header before it nor the newline after it. Qwen 3's empty <think></think> block, which its
template puts before the last assistant answer, is part of what the model produces.

Pure Python, no TensorFlow: the check stage renders every conversation with it before any weight
loads, so a conversation the template refuses is named with its file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from runner.families import FAMILIES

ROLES = ("system", "user", "assistant")
BOS, EOS = "<bos>", "<eos>"  # the tokenizer's own start and end tokens, whatever they are called


class ChatError(ValueError):
    """A conversation the template cannot render (its words say why)."""


@dataclass(frozen=True)
class Piece:
    text: str  # the text, or the special token's name
    special: bool = False
    trainable: bool = False


def _t(text: str, trainable: bool = False) -> Piece:
    return Piece(text, False, trainable)


def _s(name: str, trainable: bool = False) -> Piece:
    return Piece(name, True, trainable)


def _alternating(messages, template: str) -> None:
    for i, m in enumerate(messages):
        if (m["role"] == "user") != (i % 2 == 0):
            raise ChatError(f"the {template} template needs turns alternating user/assistant/... "
                            f"starting with user; turn {i + 1} is {m['role']}")


def _gemma_turns(messages, first_user_prefix: str = "") -> list:
    out = [_s(BOS)]
    for i, m in enumerate(messages):
        train = m["role"] == "assistant"
        role = "model" if train else m["role"]
        prefix = first_user_prefix if i == 0 else ""
        out += [_s("<start_of_turn>"), _t(role + "\n" + prefix), _t(m["content"].strip(), train),
                _s("<end_of_turn>", train), _t("\n")]
    return out


def gemma(messages) -> list:
    """Gemma and Gemma 2 instruction models: no system role."""
    if messages and messages[0]["role"] == "system":
        raise ChatError("the gemma template has no system role (Gemma 1 and 2 refuse it); drop "
                        "the system message or fold it into the first user turn")
    _alternating(messages, "gemma")
    return _gemma_turns(messages)


def gemma3(messages) -> list:
    """Gemma 3: a leading system message becomes the start of the first user turn."""
    prefix = ""
    if messages and messages[0]["role"] == "system":
        prefix, messages = messages[0]["content"] + "\n\n", messages[1:]
    _alternating(messages, "gemma3")
    return _gemma_turns(messages, prefix)


def llama3(messages) -> list:
    """Llama 3 Instruct: a header per turn, any order of roles."""
    out = [_s(BOS)]
    for m in messages:
        train = m["role"] == "assistant"
        out += [_s("<|start_header_id|>"), _t(m["role"]), _s("<|end_header_id|>"), _t("\n\n"),
                _t(m["content"].strip(), train), _s("<|eot_id|>", train)]
    return out


def mistral(messages) -> list:
    """Mistral 7B Instruct (v0.1/v0.2): [INST] ... [/INST] around user turns; no system role."""
    if any(m["role"] == "system" for m in messages):
        raise ChatError("the mistral template has no system role; drop the system message or "
                        "fold it into the first user turn")
    _alternating(messages, "mistral")
    out = [_s(BOS)]
    for m in messages:
        if m["role"] == "user":
            out.append(_t("[INST] " + m["content"] + " [/INST]"))
        else:
            out += [_t(m["content"], True), _s(EOS, True)]
    return out


def _chatml_turn(role: str, content: str, train: bool = False, head_extra: str = "") -> list:
    return [_s("<|im_start|>"), _t(role + "\n"), _t(head_extra + content, train),
            _s("<|im_end|>", train), _t("\n")]


def _chatml(messages, default_system: Optional[str]) -> list:
    out = []
    if default_system is not None and (not messages or messages[0]["role"] != "system"):
        out += _chatml_turn("system", default_system)
    for m in messages:
        out += _chatml_turn(m["role"], m["content"], m["role"] == "assistant")
    return out


def chatml(messages) -> list:
    """<|im_start|>role ... <|im_end|> turns, no default system message."""
    return _chatml(messages, None)


def qwen2(messages) -> list:
    """Qwen 2 Instruct: ChatML with "You are a helpful assistant." when no system is given."""
    return _chatml(messages, "You are a helpful assistant.")


def qwen2_5(messages) -> list:
    """Qwen 2.5: ChatML with Qwen's own default system message."""
    return _chatml(messages, "You are Qwen, created by Alibaba Cloud. You are a helpful "
                             "assistant.")


def qwen3(messages) -> list:
    """Qwen 3: ChatML; an assistant answer after the last user turn carries its reasoning in a
    <think> block (empty when there is none), earlier answers lose theirs."""
    last_query = max((i for i, m in enumerate(messages) if m["role"] == "user"),
                     default=len(messages) - 1)
    out = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            out += _chatml_turn(m["role"], m["content"])
            continue
        content, reasoning = m["content"], ""
        if "</think>" in content:
            reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
            content = content.split("</think>")[-1].lstrip("\n")
        if i > last_query and (i == len(messages) - 1 or reasoning):
            think = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n"
            out += _chatml_turn("assistant", content.lstrip("\n"), True, think)
        else:
            out += _chatml_turn("assistant", content, True)
    return out


TEMPLATES: dict[str, Callable] = {
    "gemma": gemma, "gemma3": gemma3, "llama3": llama3, "mistral": mistral, "chatml": chatml,
    "qwen2": qwen2, "qwen2.5": qwen2_5, "qwen3": qwen3,
}


def template_for(family: str, chosen: Optional[str]) -> str:
    """The template name a run uses, or a ValueError saying why it cannot."""
    own = FAMILIES[family]
    name = chosen or own.chat_template
    if name not in own.chat_templates:
        raise ValueError(f"dataset.chat_template={name} is not a template of the {family} family "
                         f"(its tokenizer lacks that format's special tokens); use one of "
                         f"{list(own.chat_templates)} or null for its own ({own.chat_template})")
    return name


def render(messages: list, template: str) -> list:
    """Pieces of one conversation ([{"role", "content"}, ...]); a ChatError when the template
    refuses it (unknown role, order, no turn)."""
    if not messages:
        raise ChatError("the conversation has no message")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            raise ChatError(f"turn {i + 1} has role {m['role']!r}; the chat format takes "
                            f"{list(ROLES)}")
    return TEMPLATES[template](messages)


def chunks(pieces: list) -> list:
    """Pieces -> (text, head, special, trainable) rows: a special token alone, or the text
    between two special tokens joined, with `head` its untrainable beginning and `trainable`
    whether the rest is trained. A template never puts untrainable text after trainable text
    without a special token between them (asserted)."""
    rows, text, head, train = [], None, "", False

    def flush():
        if text:
            rows.append((text, head if train else "", False, train))

    for p in pieces:
        if p.special:
            flush()
            text, head, train = None, "", False
            rows.append((p.text, "", True, p.trainable))
            continue
        if text is None:
            text, head, train = "", "", False
        assert not (train and not p.trainable and p.text), "untrainable text after trainable"
        if not train:
            if p.trainable:
                head, train = text, True
            else:
                head = text + p.text
        text += p.text
    flush()
    return rows

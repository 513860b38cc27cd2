"""The set of values each config key accepts, declared next to its schema field (runner/config.py).

`key(default, domain)` makes a dataclass field that carries its domain; `runner.config.validate`
walks the schema and checks every value before anything heavy is imported or built, so a value
outside its domain ends with one line naming the key, the value, the domain and the fix.

Types (int vs str, an enum's choices) are OmegaConf's job at compose time; a domain says what a
well-typed value must also be (positive, at most 1, one of a table's names, a folder that can be
created). Relations between keys (warmup below the run's steps, axis names per mesh dimension)
are checked by the stage that knows them (runner/checks.py).

Each domain also gives `bad_examples()`: command-line values outside it, which the
table-driven test (tests/test_domains.py) tries for every key of the schema.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence


class Domain:
    """What a key accepts. `problem(value)` is None when the value is in the domain."""

    text = "any value"

    def problem(self, value) -> Optional[str]:
        return None

    def bad_examples(self) -> list[str]:
        """Command-line values outside the domain (wrong types count: compose rejects them)."""
        return []

    def bad_overrides(self, key: str) -> list[str]:
        """Whole command-line overrides that set `key` outside the domain."""
        return [f"{key}={value}" for value in self.bad_examples()]


def key(default: Any = MISSING, domain: Domain | None = None, *, help: str = "",
        operational: bool = False):
    """A schema field with its domain and its one-line description (`python -m runner --help`
    prints it; a test checks every key has one). `operational`: the key says where or how a run
    executes (tracking, devices, caches), not what it computes, so it never decides "same
    run"."""
    meta = {"domain": domain, "operational": operational, "help": help}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Number(Domain):
    """A number in [low, high] (an end excluded when low_open / high_open). integer: whole
    numbers only."""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    @property
    def text(self) -> str:
        kind = "an integer" if self.integer else "a number"
        parts = []
        if self.low > -math.inf:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high < math.inf:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{kind} {' and '.join(parts)}".strip()

    def problem(self, value):
        if not _is_number(value) or math.isnan(value):
            return f"must be {self.text}"
        if value < self.low or (self.low_open and value == self.low) or value > self.high \
                or (self.high_open and value == self.high):
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        bad = []
        if self.low > -math.inf:
            bad.append(f"{self.low if self.low_open else self.low - 1:g}")
        if self.high < math.inf:
            bad.append(f"{self.high if self.high_open else self.high + 1:g}")
        return bad + ["nan" if not self.integer else "[1]"]


def at_least(low: int) -> Number:
    return Number(low=low, integer=True)


def positive() -> Number:
    return Number(low=0, low_open=True)


def fraction(open_high: bool = False) -> Number:
    """[0, 1], or [0, 1) when open_high (a value of exactly 1 would stop the thing it scales)."""
    return Number(low=0, high=1, high_open=open_high)


@dataclass(frozen=True)
class Text(Domain):
    """A string; non_empty: at least one non-blank character; pattern: a regex it must match."""
    non_empty: bool = True
    pattern: str = ""
    pattern_text: str = ""  # the pattern in words
    bad: tuple = ()  # values outside the pattern, for the test

    @property
    def text(self) -> str:
        if self.pattern:
            return self.pattern_text
        return "a non-empty string" if self.non_empty else "a string"

    def problem(self, value):
        if not isinstance(value, str):
            return f"must be {self.text}"
        if self.non_empty and not value.strip():
            return f"must be {self.text}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        bad = ["{a:1}"]
        if self.non_empty:
            bad.append("''")
        return bad + list(self.bad)


@dataclass(frozen=True)
class Template(Domain):
    """A Python format string over named fields: "Translate:\\n{src}\\n"."""
    text = "a format string whose fields are names in braces, e.g. 'Q: {question}\\n'"

    def problem(self, value):
        if not isinstance(value, str):
            return f"must be {self.text}"
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
        except ValueError as exc:
            return f"is not a format string ({exc}); write literal braces as {{{{ and }}}}"
        if any(not f.isidentifier() for f in fields):
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        return ["'{src'", "'{0}'"]


@dataclass(frozen=True)
class Choice(Domain):
    """One of a closed set of names. For enums compose already checks; `names` is a function so
    tables that live in other modules are read only when a value is checked."""
    names: Optional[Callable[[], Sequence[str]]] = None

    @property
    def text(self) -> str:
        return f"one of {sorted(self.names())}" if self.names else "one of the listed choices"

    def problem(self, value):
        if self.names is not None and str(value).lower() not in {n.lower() for n in self.names()}:
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        return ["no_such_choice"]


@dataclass(frozen=True)
class OneOf(Domain):
    """One of a few values of any type (true, false, a word): for a key typed Any, because
    OmegaConf has no union of bool and str."""
    values: tuple = ()

    @property
    def text(self) -> str:
        shown = [str(v).lower() if isinstance(v, bool) else str(v) for v in self.values]
        return "one of " + ", ".join(shown)

    def problem(self, value):
        if not any(value is v if isinstance(v, bool) else value == v for v in self.values):
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        return ["maybe", "1"]


@dataclass(frozen=True)
class AutoOr(Domain):
    """The word `auto` (the runner chooses), or a value in `inner`."""
    inner: Domain = Domain()

    @property
    def text(self) -> str:
        return f"auto or {self.inner.text}"

    def problem(self, value):
        if value == "auto":
            return None
        return f"must be {self.text}" if self.inner.problem(value) else None

    def bad_examples(self):
        return ["automatic", *self.inner.bad_examples()[:1]]


@dataclass(frozen=True)
class Flag(Domain):
    text = "true or false"

    def bad_examples(self):
        return ["maybe"]


@dataclass(frozen=True)
class ListOf(Domain):
    """A list whose items are each in `item`; non_empty: at least one; unique: no repeats."""
    item: Domain = Domain()
    non_empty: bool = False
    unique: bool = False

    @property
    def text(self) -> str:
        return (f"a {'non-empty ' if self.non_empty else ''}list of "
                f"{'distinct ' if self.unique else ''}items, each {self.item.text}")

    def problem(self, value):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
            return f"must be {self.text}"
        items = list(value)
        if self.non_empty and not items:
            return f"must be {self.text}"
        if self.unique and len(set(map(str, items))) != len(items):
            return f"must be {self.text}"
        for i, item in enumerate(items):
            wrong = self.item.problem(item)
            if wrong:
                return f"item {i} ({item!r}) {wrong}"
        return None

    def bad_examples(self):
        bad = ["{a:1}"]
        if self.non_empty:
            bad.append("[]")
        return bad + [f"[{b}]" for b in self.item.bad_examples()[:2]]


@dataclass(frozen=True)
class MeshShape(Domain):
    text = "a non-empty list of positive sizes, at most one of them -1 (all remaining devices)"

    def problem(self, value):
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            return f"must be {self.text}"
        sizes = list(value)
        if not sizes or any(not isinstance(s, int) or (s < 1 and s != -1) for s in sizes) \
                or sizes.count(-1) > 1:
            return f"must be {self.text}"
        return None

    def bad_examples(self):
        return ["[]", "[0,8]", "[-1,-1]", "[2,-3]"]


@dataclass(frozen=True)
class Folder(Domain):
    """A folder that exists or can be created (its nearest existing parent is a writable
    folder); must_exist: it must already be there."""
    must_exist: bool = False

    @property
    def text(self) -> str:
        return "an existing folder" if self.must_exist else \
            "a folder that exists or can be created"

    def problem(self, value):
        if not isinstance(value, str) or not value.strip():
            return f"must be {self.text}"
        return folder_problem(Path(value).expanduser(), self.must_exist)

    def bad_examples(self):
        return ["/proc/no_such_folder", "''"]


def folder_problem(path: Path, must_exist: bool = False) -> Optional[str]:
    """None when `path` is (or can be made) a writable folder; else what is wrong with it.
    Tried for real (a temporary folder made and removed in it, or in its nearest existing
    parent): permission bits do not tell root, read-only mounts or /proc."""
    import tempfile

    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    if not path.exists() and must_exist:
        return "does not exist"
    parent = path
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {parent} is a file"
    try:
        tempfile.TemporaryDirectory(dir=parent, prefix=".runner-probe-").cleanup()
    except OSError as exc:
        where = "" if parent == path else f"in {parent} "
        return f"cannot be {'written' if parent == path else 'created'} {where}({exc.strerror})"
    return None


@dataclass(frozen=True)
class Mapping(Domain):
    """A mapping from names to values, each checked by `check(name, value)` (a message that
    starts with the name, or None). examples: (name, bad value) pairs for the test."""
    text_: str = "a mapping"
    check: Optional[Callable[[str, Any], Optional[str]]] = None
    examples: tuple = ()

    @property
    def text(self) -> str:
        return self.text_

    def problem(self, value):
        if not hasattr(value, "items"):
            return f"must be {self.text}"
        for name, item in value.items():
            wrong = self.check(str(name), item) if self.check else None
            if wrong:
                return wrong
        return None

    def bad_examples(self):
        return ["[1,2]"]

    def bad_overrides(self, key: str) -> list[str]:
        return super().bad_overrides(key) + [f"+{key}.{name}={value}"
                                             for name, value in self.examples]

"""A user's own data (local files, or a Hugging Face dataset) as a prepared TFDS dataset.

The records are scanned once (fields and their kinds, which records lack a field, which chat
roles occur, where), then written by a TFDS builder, so the rest of the pipeline is the one every
TFDS dataset takes: determinism, split slicing (`train[:90%]`), `take`, sweeps and exact resume
behave the same. The prepared copy lives under <data_dir>/user_data/<key>/, where the key is a
digest of the records' content (the files' bytes, or the Hugging Face dataset's fingerprints)
and of how they are read: an edited file is prepared again, an unchanged one never.

Stored fields: a text field for every field with scalar values (a value that is not a string,
such as a number or a list, as its JSON text, and noted in the scan: the check stage refuses it
where the format reads text unless dataset.stringify_values is set), a chat field ({role,
content} sequences) for every field holding a list of messages, and `_where`
("data/train.jsonl:17"), so later checks can name a file and line.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from runner.datasets import records as rec
from runner.errors import UserError

READER_VERSION = "3"  # bump when a change here changes what a prepared copy holds
WHERE = "_where"
TEXT, MESSAGES = "text", "messages"
EVAL_SPLIT = "validation"  # the split dataset.eval_files become


@dataclass
class Scan:
    """What the records hold, found before any is written."""
    kinds: dict = field(default_factory=dict)  # field -> TEXT or MESSAGES
    counts: dict = field(default_factory=dict)  # split -> records
    missing: dict = field(default_factory=dict)  # field -> [first place it is missing, count]
    roles: dict = field(default_factory=dict)  # chat role -> first place it occurs
    # field -> [first place it holds a value that is not a string, that value as JSON text]
    non_text: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kinds": self.kinds, "counts": self.counts, "missing": self.missing,
                "roles": self.roles, "non_text": self.non_text}


@dataclass(frozen=True)
class Source:
    label: str  # names it in messages: "files data/*.jsonl", "hf://owner/name"
    key: str  # digest of the content and of how it is read
    splits: dict  # split name -> () -> iterator of (where, record)


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else str(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


def _file_digest(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.digest()


def files_source(dataset_cfg) -> Source:
    """dataset.files (split "train") and dataset.eval_files (split "validation")."""
    groups = {"train": ("dataset.files", dataset_cfg.files)}
    if dataset_cfg.eval_files:
        groups[EVAL_SPLIT] = ("dataset.eval_files", dataset_cfg.eval_files)
    parts, splits = [READER_VERSION, dataset_cfg.file_format], {}
    for split, (key, pattern) in groups.items():
        paths = rec.expand(pattern, key)
        formats = [rec.format_of(p, dataset_cfg.file_format, key) for p in paths]
        for path, fmt in zip(paths, formats):
            parts += [split, path, fmt, _file_digest(path)]
        splits[split] = _reader(paths, formats)
    return Source(f"files {dataset_cfg.files}", _digest(*parts), splits)


def _reader(paths, formats) -> Callable[[], Iterator]:
    def records():
        for path, fmt in zip(paths, formats):
            try:
                yield from rec.read(path, fmt)
            except UnicodeDecodeError as exc:
                raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                                "save it as UTF-8 (spreadsheets: \"CSV UTF-8\")") from None
    return records


# ShareGPT's speakers (Axolotl's and LLaMA-Factory's `conversations` with `from`/`value`) in
# the chat format's roles; any other speaker is kept, and the role check names it.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


def _message(value, where: str) -> dict:
    if isinstance(value, dict) and "role" not in value and isinstance(value.get("from"), str):
        value = {"role": SHAREGPT_ROLES.get(value["from"], value["from"]),
                 "content": value.get("value")}
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise UserError(f"{where}: a message must be an object with a string \"role\" and a "
                        f"\"content\" (or ShareGPT's \"from\" and \"value\"), not "
                        f"{json.dumps(value)[:80]}")
    content = value.get("content")
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]: the text parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is not None and not isinstance(content, str):
        raise UserError(f"{where}: a message's \"content\" must be text, not "
                        f"{json.dumps(content)[:80]}")
    return {"role": value["role"], "content": content or ""}


def _is_messages(value) -> bool:
    """A list of {"role", "content"}, or ShareGPT's {"from": <speaker>, "value"} (a list of
    other objects with a "from", say {"from": "en", "to": "fr"}, stays data)."""
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, dict) and ("role" in v or isinstance(v.get("from"), str) and "value" in v)
        for v in value)


def _normalized(record: dict, where: str) -> dict:
    """Every value as text or as a list of {role, content}; None stands for a missing value."""
    out = {}
    for name, value in record.items():
        if name == WHERE:
            continue
        if value is None or (isinstance(value, float) and value != value):  # NaN: pandas' None
            out[name] = None
        elif isinstance(value, str):
            out[name] = value
        elif _is_messages(value):
            out[name] = [_message(v, where) for v in value]
        else:
            out[name] = json.dumps(value, ensure_ascii=False)
    return out


def scan(source: Source) -> Scan:
    """Read every record once: kinds of fields, what is missing where, chat roles."""
    result = Scan()
    seen: dict = {}  # field -> first place it holds a value
    first, total = None, 0  # the first record's place; records read so far, all splits
    for split, records in source.splits.items():
        n = 0
        for where, record in records():
            n += 1
            first = first or where
            values = {k: v for k, v in _normalized(record, where).items() if v is not None}
            for name, value in record.items():
                if name in values and not isinstance(value, str) and not _is_messages(value):
                    result.non_text.setdefault(name, [where, values[name]])
            for name, value in values.items():
                kind = MESSAGES if isinstance(value, list) else TEXT
                known = result.kinds.setdefault(name, kind)
                if name not in seen:
                    seen[name] = where
                    if total:  # every record before this one lacked it
                        result.missing[name] = [first, total]
                if known != kind:
                    raise UserError(f"{where}: field \"{name}\" holds {kind} here but {known} at "
                                    f"{seen[name]}; one field holds one kind of value")
                if kind == MESSAGES:
                    for m in value:
                        result.roles.setdefault(m["role"], where)
            for name in result.kinds.keys() - values.keys():
                result.missing.setdefault(name, [where, 0])[1] += 1
            total += 1
        result.counts[split] = n
    return result


def _features(kinds: dict):
    import tensorflow_datasets as tfds

    spec = {WHERE: tfds.features.Text()}
    for name, kind in kinds.items():
        spec[name] = (tfds.features.Sequence({"role": tfds.features.Text(),
                                              "content": tfds.features.Text()})
                      if kind == MESSAGES else tfds.features.Text())
    return tfds.features.FeaturesDict(spec)


@functools.cache
def _builder_class():
    """Defined on first use (TFDS imports are heavy); not registered by name with TFDS: it is
    reached only through prepare()."""
    import tensorflow_datasets as tfds

    class UserData(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version("1.0.0")

        def __init__(self, *, source: Source, scanned: Scan, **kwargs):
            self._source, self._scan = source, scanned
            super().__init__(**kwargs)

        def _info(self):
            # File order kept (TFDS would shuffle by key): train[:90%] is the first 90% of
            # the records, as a user reads the file.
            return tfds.core.DatasetInfo(builder=self, description=self._source.label,
                                         features=_features(self._scan.kinds),
                                         disable_shuffling=True)

        def _split_generators(self, dl_manager):
            del dl_manager
            return {split: self._generate_examples(split) for split in self._source.splits}

        def _generate_examples(self, split):
            for i, (where, record) in enumerate(self._source.splits[split]()):
                values = _normalized(record, where)
                example = {WHERE: where}
                for name, kind in self._scan.kinds.items():
                    value = values.get(name)
                    example[name] = (value or []) if kind == MESSAGES else (value or "")
                yield i, example

    return UserData


@dataclass
class Prepared:
    builder: object  # a TFDS builder over the prepared copy
    scan: Scan
    source: Source


def prepare(source: Source, data_dir: Optional[str]) -> Prepared:
    """The prepared copy of `source`, preparing it first when it is not there yet."""
    root = Path(data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")
    home = root.expanduser() / "user_data" / source.key
    home.mkdir(parents=True, exist_ok=True)
    # The processes of a multi-process run (and concurrent sweep jobs) prepare it once.
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _prepared(source, home)


def _prepared(source: Source, home: Path) -> Prepared:
    import tensorflow_datasets as tfds

    done = home / "scan.json"  # written last: its presence means the copy is complete
    if done.is_file():
        scanned = Scan(**json.loads(done.read_text()))
        version_dir = home / "user_data" / str(_builder_class().VERSION)
        return Prepared(tfds.builder_from_directory(str(version_dir)), scanned, source)
    scanned = scan(source)
    empty = [s for s, n in scanned.counts.items() if n == 0]
    if empty:
        raise UserError(f"{source.label}: the {empty[0]} split holds no record (empty files?); "
                        "check the files")
    builder = _builder_class()(source=source, scanned=scanned, data_dir=str(home))
    builder.download_and_prepare()
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(scanned.to_json()))
    tmp.replace(done)
    return Prepared(builder, scanned, source)

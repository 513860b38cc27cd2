"""A user's data files as records: JSONL, CSV, Parquet and plain text, read the same way.

Every record comes with where it came from ("data/train.jsonl:17"), so a mistake found later
(a missing field, an unknown role) can name the file and line. A malformed line is a UserError
at once, naming the file and the line. Only the standard library reads JSONL, CSV and text;
Parquet is read with pyarrow (which TFDS already installs).

Files as other programs write them: a byte-order mark (spreadsheets' "CSV UTF-8", Notepad) is
dropped, UTF-16 with its mark (spreadsheets' "Unicode text") is decoded, CRLF and CR line ends
are line ends, a CSV field in quotes may span lines (its CRLFs read as newlines), and a CSV
file's delimiter (comma, semicolon as spreadsheets in many locales write it, or tab) is read off
its header line.
"""

from __future__ import annotations

import csv
import glob
import json
from pathlib import Path
from typing import Iterator

from runner.errors import UserError

SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "csv",
            ".parquet": "parquet", ".txt": "text", ".text": "text"}
_BOMS = ((b"\xef\xbb\xbf", "utf-8-sig"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))
_DELIMITERS = ",;\t"
FORMATS = ("auto", "jsonl", "csv", "parquet", "text")


def expand(pattern: str, key: str) -> list[Path]:
    """The files a path or glob names (sorted, so the order never depends on the file system),
    or a UserError naming the key."""
    path = Path(pattern).expanduser()
    if any(ch in pattern for ch in "*?["):
        files = sorted(Path(p).resolve() for p in glob.glob(str(path), recursive=True)
                       if Path(p).is_file())
        if not files:
            raise UserError(f"{key}={pattern} matches no file; check the path (relative paths "
                            f"are relative to {Path.cwd()})")
        return files
    if path.is_dir():
        raise UserError(f"{key}={pattern} is a folder; name its files, e.g. "
                        f"{key}='{pattern}/*.jsonl'")
    if not path.is_file():
        raise UserError(f"{key}={pattern} does not exist (relative paths are relative to "
                        f"{Path.cwd()}); fix the path")
    return [path.resolve()]


def format_of(path: Path, chosen: str, key: str) -> str:
    if chosen != "auto":
        return chosen
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise UserError(f"{key}: cannot tell the format of {path.name} from its suffix; set "
                        f"dataset.file_format to one of {list(FORMATS[1:])}")
    return fmt


def read(path: Path, fmt: str) -> Iterator[tuple[str, dict]]:
    """(where, record) for every record of one file."""
    reader = {"jsonl": _jsonl, "csv": _csv, "parquet": _parquet, "text": _text}[fmt]
    yield from reader(path)


def _encoding(path: Path) -> str:
    """UTF-8, or what the file's byte-order mark says."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((name for mark, name in _BOMS if head.startswith(mark)), "utf-8")


def _open(path: Path, **kwargs):
    """Text mode: CRLF and CR line ends arrive as "\n" (newline="" keeps them for csv)."""
    return open(path, encoding=_encoding(path), **kwargs)


def _jsonl(path: Path):
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: not a JSON object ({exc.msg} at column {exc.colno}); "
                                "fix the line (one JSON object per line)") from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: a JSON {type(record).__name__}, not an object; write "
                                "one object per line, e.g. {\"text\": \"...\"}")
            yield where, record


def _delimiter(path: Path) -> str:
    """Tab for .tsv; else the delimiter the header line uses most: comma, semicolon or tab."""
    if path.suffix.lower() == ".tsv":
        return "\t"
    with _open(path, newline="") as f:
        header = f.readline()
    return max(_DELIMITERS, key=header.count) if any(d in header for d in _DELIMITERS) else ","


def _csv(path: Path):
    """csv's own reader (quoted fields, line breaks in them), rows paired with the header here:
    DictReader skips blank lines without saying so, which would put records on the wrong line."""
    delimiter = _delimiter(path)
    with _open(path, newline="") as f:  # newline="": quoted fields may hold line breaks
        rows = csv.reader(f, delimiter=delimiter)
        header = next(rows, None)
        if not header:
            raise UserError(f"{path}: no header line; a CSV file's first line names its columns")
        while True:
            first = rows.line_num + 1  # a record's place is its first line
            row = next(rows, None)
            if row is None:
                return
            if not row:
                continue  # a blank line
            if len(row) != len(header):
                extra = len(row) - len(header)
                raise UserError(f"{path}:{first}: has {extra if extra > 0 else 'too few'} "
                                f"{'extra ' if extra > 0 else ''}fields for the header's "
                                f"{len(header)} columns; fix the line (quote fields that hold a "
                                f"{_NAMES[delimiter]})")
            yield f"{path}:{first}", {k: v.replace("\r\n", "\n") for k, v in zip(header, row)}


_NAMES = {",": "comma", ";": "semicolon", "\t": "tab"}


def _parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and OSError subclasses
        raise UserError(f"{path}: not a Parquet file ({str(exc).splitlines()[0][:120]})") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield f"{path}:row {row}", record


def _text(path: Path):
    with _open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if line.strip():
                yield f"{path}:{number}", {"text": line}

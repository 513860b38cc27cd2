"""A user's own data: JSONL, CSV, Parquet and text files read through one TFDS builder keyed by
their content, Hugging Face datasets through `datasets` (a local repository folder here; the hub
fails fast offline), and every bad input named before any weight loads."""

import json
import os

import pytest

from conftest import compose, run_cli

RECORDS = [{"text": f"the film number {i} was good, I liked it", "score": i % 10}
           for i in range(40)]


def _write(path, records=RECORDS):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _texts(cfg, split="train"):
    from runner.datasets.opening import open_dataset

    opened = open_dataset(cfg.dataset)
    ds = opened.builder.as_dataset(split=split, shuffle_files=False)
    return [ex["text"].decode() for ex in ds.as_numpy_iterator()], opened


def _data_dir(tmp_path):
    return f"dataset.data_dir={tmp_path / 'prepared'}"


def test_every_file_format_gives_the_same_examples(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    _write(tmp_path / "d.jsonl")
    with open(tmp_path / "d.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["text", "score"])
        writer.writeheader()
        writer.writerows(RECORDS)
    pq.write_table(pa.Table.from_pylist(RECORDS), tmp_path / "d.parquet")
    (tmp_path / "d.txt").write_text("".join(r["text"] + "\n\n" for r in RECORDS))
    expected = [r["text"] for r in RECORDS]
    for suffix in ("jsonl", "csv", "parquet", "txt"):
        texts, opened = _texts(compose(f"dataset.files={tmp_path}/d.{suffix}",
                                       _data_dir(tmp_path)))
        assert texts == expected, suffix
        if suffix != "txt":
            assert opened.builder.info.features["score"] is not None  # numbers kept, as text


def test_prepared_once_and_again_when_a_file_changes(tmp_path):
    data = _write(tmp_path / "d.jsonl")
    cfg = compose(f"dataset.files={data}", _data_dir(tmp_path))
    _, first = _texts(cfg)
    marker = next((tmp_path / "prepared" / "user_data").glob("*/scan.json"))
    stamp = marker.stat().st_mtime_ns
    _, again = _texts(cfg)
    assert marker.stat().st_mtime_ns == stamp  # reused, not scanned or written again
    assert str(again.builder.data_dir) == str(first.builder.data_dir)
    _write(data, RECORDS[:10])
    texts, edited = _texts(cfg)
    assert len(texts) == 10 and str(edited.builder.data_dir) != str(first.builder.data_dir)


def test_eval_files_and_slices_of_the_same_files(tmp_path):
    from runner.checks import run_checks

    train, held_out = _write(tmp_path / "a.jsonl"), _write(tmp_path / "b.jsonl", RECORDS[:8])
    cfg = compose(f"dataset.files={train}", f"dataset.eval_files={held_out}",
                  "dataset.eval_split=validation", _data_dir(tmp_path))
    assert run_checks(cfg, 8, for_training=False).problems == []
    assert len(_texts(cfg, "validation")[0]) == 8
    cfg = compose(f"dataset.files={train}", "dataset.split='train[:75%]'",
                  "dataset.eval_split='train[75%:]'", _data_dir(tmp_path))
    assert run_checks(cfg, 8, for_training=False).problems == []
    assert len(_texts(cfg, "train[75%:]")[0]) == 10


def test_a_hugging_face_dataset_folder_reads_through_datasets(tmp_path):
    repo = tmp_path / "repo"
    (repo / "data").mkdir(parents=True)
    _write(repo / "data" / "train.jsonl")
    _write(repo / "data" / "test.jsonl", RECORDS[:5])
    cfg = compose(f"dataset.name=hf://{repo}", "dataset.eval_split=test", _data_dir(tmp_path))
    texts, opened = _texts(cfg, "test")
    assert texts == [r["text"] for r in RECORDS[:5]]
    assert sorted(opened.builder.info.splits) == ["test", "train"]


def test_a_hub_dataset_fails_fast_offline(tmp_path):
    import time

    from runner.datasets.opening import open_dataset
    from runner.errors import UserError

    os.environ["HF_HOME"] = str(tmp_path / "hf")  # an empty cache
    try:
        cfg = compose("dataset.name=hf://nobody/no_such_dataset", _data_dir(tmp_path))
        started = time.monotonic()
        with pytest.raises(UserError, match="cannot be reached"):
            open_dataset(cfg.dataset)
        assert time.monotonic() - started < 30
    finally:
        os.environ.pop("HF_HOME")


def _chats(path, conversations):
    return _write(path, [{"messages": c} for c in conversations])


GOOD = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


@pytest.mark.parametrize("case,words", [
    ("missing", ["dataset.files=", "does not exist"]),
    ("empty_glob", ["matches no file"]),
    ("malformed", ["bad.jsonl:3: not a JSON object"]),
    ("no_field", ["d.jsonl:2: the record has no \"text\" field", "dataset.text_field"]),
    ("unknown_role", ["c.jsonl:2: a message has role 'tool'"]),
    ("refused_order", ["c.jsonl:1:", "alternating user/assistant"]),
    ("template", ["dataset.chat_template=llama3 is not a template of the gemma family"]),
    ("eval_files", ["dataset.eval_split=validation"]),
    ("csv_short", ["s.csv:3: has too few fields"]),
    ("empty", ["files ", "the train split holds no record"]),
])
def test_bad_inputs_are_named_before_weights_load(tmp_path, case, words):
    from runner.checks import run_checks

    good = _write(tmp_path / "d.jsonl")
    overrides = {
        "missing": [f"dataset.files={tmp_path}/nope.jsonl"],
        "empty_glob": [f"dataset.files={tmp_path}/*.parquet"],
        "no_field": [f"dataset.files={_write(tmp_path / 'd.jsonl', [RECORDS[0], {'score': 1}])}"],
        "eval_files": [f"dataset.files={good}", f"dataset.eval_files={good}"],
        "template": [f"dataset.files={_chats(tmp_path / 'c.jsonl', [GOOD])}", "dataset.format=chat",
                     "dataset.chat_template=llama3"],
    }.get(case)
    if case == "malformed":
        (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c"\n')
        overrides = [f"dataset.files={tmp_path}/bad.jsonl"]
    if case in ("unknown_role", "refused_order"):
        second = ([{"role": "tool", "content": "x"}] if case == "unknown_role" else GOOD)
        first = GOOD if case == "unknown_role" else [{"role": "assistant", "content": "x"}]
        overrides = [f"dataset.files={_chats(tmp_path / 'c.jsonl', [first, second])}",
                     "dataset.format=chat"]
    if case == "csv_short":
        (tmp_path / "s.csv").write_text("text,score\na,1\nb\n")
        overrides = [f"dataset.files={tmp_path}/s.csv"]
    if case == "empty":
        (tmp_path / "e.jsonl").write_text("\n\n")
        overrides = [f"dataset.files={tmp_path}/e.jsonl"]
    cfg = compose(*overrides, _data_dir(tmp_path))
    problems = run_checks(cfg, 8, for_training=False).problems
    assert problems, case
    for word in words:
        assert word in problems[0], problems[0]


def test_nothing_left_after_dropping_is_one_clear_error(tmp_path):
    import keras_hub

    from runner import data
    from runner.errors import UserError
    from runner.model import SHIPPED_PRESETS

    pre = keras_hub.models.CausalLMPreprocessor.from_preset(str(SHIPPED_PRESETS / "tiny_gemma"))
    cfg = compose(f"dataset.files={_write(tmp_path / 'd.jsonl')}", "dataset.too_long=drop",
                  _data_dir(tmp_path))
    with pytest.raises(UserError, match="no example left after dropping those longer than "
                                        "train.sequence_length=4"):
        data.build(cfg.dataset, pre, 2, 4, 1, None, 0)


@pytest.mark.slow
def test_a_users_jsonl_trains_and_a_malformed_one_stops_with_exit_2(workdir):
    from runner.rundir import SUMMARY, read_json

    _write(workdir / "my.jsonl")
    proc = run_cli("dataset.files=my.jsonl", "train.steps=3", "hydra.run.dir=run",
                   "tracking.mode=disabled", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_json(workdir / "run" / SUMMARY)["status"] == "finished"
    (workdir / "bad.jsonl").write_text('{"text": "a"}\nnot json\n')
    proc = run_cli("dataset.files=bad.jsonl", "hydra.run.dir=bad", "tracking.mode=disabled",
                   cwd=workdir)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "bad.jsonl:2: not a JSON object" in errors[0], proc.stderr[-800:]
    summary = workdir / "bad" / SUMMARY
    assert not summary.exists() or read_json(summary)["status"] != "finished"


ROWS = [("one", "the first answer"), ("two, with a comma", "a second\nanswer on two lines"),
        ('a "quoted" question', "the third answer")]
PAIRS = [{"prompt": p, "response": r} for p, r in ROWS]


def _spreadsheet_files(folder):
    """The same three records as spreadsheets, editors and other tools write them."""
    import csv
    import io

    def csv_text(delimiter=",", newline="\r\n"):
        out = io.StringIO()
        writer = csv.writer(out, delimiter=delimiter, lineterminator=newline)
        writer.writerow(["prompt", "response"])
        writer.writerows((p, r.replace("\n", "\r\n")) for p, r in ROWS)  # CRLF inside a cell
        return out.getvalue()

    jsonl = "".join(json.dumps(r) + "\n" for r in PAIRS)
    files = {
        "excel_utf8.csv": b"\xef\xbb\xbf" + csv_text().encode(),  # "CSV UTF-8": a BOM, CRLF
        "excel_semicolon.csv": csv_text(";").encode(),  # locales whose decimal mark is a comma
        "unicode_text.tsv": b"\xff\xfe" + csv_text("\t").encode("utf-16-le"),  # "Unicode text"
        "notepad.jsonl": b"\xef\xbb\xbf" + jsonl.replace("\n", "\r\n").encode(),
        "old_mac.jsonl": jsonl.replace("\n", "\r").encode(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return list(files)


def test_files_as_spreadsheets_and_editors_write_them_give_the_same_records(tmp_path):
    """Byte-order marks, UTF-16, CRLF and CR line ends, quoted multi-line fields and other
    delimiters: the records read are exactly the ones written."""
    from runner.datasets import records

    for name in _spreadsheet_files(tmp_path):
        path = tmp_path / name
        got = [r for _, r in records.read(path, records.format_of(path, "auto", "dataset.files"))]
        assert got == PAIRS, name
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbffirst line\r\nsecond line\r\n")
    got = [r for _, r in records.read(tmp_path / "bom.txt", "text")]
    assert got == [{"text": "first line"}, {"text": "second line"}]
    places = [w for w, _ in records.read(tmp_path / "excel_utf8.csv", "csv")]
    assert [w.rsplit(":", 1)[1] for w in places] == ["2", "3", "5"]  # each record's first line
    (tmp_path / "blank.csv").write_text("text,label\n\nhi,1\n\n\nyo,2\n")
    got = list(records.read(tmp_path / "blank.csv", "csv"))
    assert [(w.rsplit(":", 1)[1], r) for w, r in got] == [
        ("3", {"text": "hi", "label": "1"}), ("6", {"text": "yo", "label": "2"})]
    (tmp_path / "one.tsv").write_text("text\nhello, world; again\n")  # one column: no guessing
    assert [r for _, r in records.read(tmp_path / "one.tsv", "csv")] == [
        {"text": "hello, world; again"}]


def test_spreadsheet_files_train_the_same_prompt_response_examples(tmp_path):
    for name in _spreadsheet_files(tmp_path):
        cfg = compose(f"dataset.files={tmp_path / name}", "dataset.format=prompt_response",
                      "dataset.prompt_template='{prompt}'", "dataset.response_template='{response}'",
                      _data_dir(tmp_path))
        from runner.checks import run_checks

        assert run_checks(cfg, 8, for_training=False).problems == [], name
        from runner.datasets.opening import open_dataset

        ds = open_dataset(cfg.dataset).builder.as_dataset(split="train", shuffle_files=False)
        got = [(ex["prompt"].decode(), ex["response"].decode()) for ex in ds.as_numpy_iterator()]
        assert got == ROWS, name


@pytest.mark.parametrize("records,fmt,words", [
    ([{"text": "a"}, {"text": 5}], [], ['d.jsonl:2: "text" holds 5, not a string',
                                       "dataset.text_field reads it as text",
                                       "dataset.stringify_values=true"]),
    ([{"text": "a"}, {"text": ["x", "y"]}], [], ['d.jsonl:2: "text" holds ["x", "y"]']),
    ([{"text": True}], [], ['d.jsonl:1: "text" holds true']),
    ([{"q": "a", "a": 3.5}], ["dataset.format=prompt_response", "dataset.prompt_template='{q}'",
                              "dataset.response_template='{a}'"],
     ['d.jsonl:1: "a" holds 3.5', "dataset.response_template reads it as text"]),
])
def test_a_value_that_is_not_text_where_text_is_read_is_refused_with_its_place(
        tmp_path, records, fmt, words):
    from runner.checks import run_checks

    data = _write(tmp_path / "d.jsonl", records)
    cfg = compose(f"dataset.files={data}", *fmt, _data_dir(tmp_path))
    problems = run_checks(cfg, 8, for_training=False).problems
    assert problems and all(w in problems[0] for w in words), problems
    allowed = compose(f"dataset.files={data}", *fmt, "dataset.stringify_values=true",
                      _data_dir(tmp_path))
    assert run_checks(allowed, 8, for_training=False).problems == []


def test_a_parquet_column_of_numbers_read_as_text_is_refused_with_its_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runner.checks import run_checks

    pq.write_table(pa.Table.from_pylist([{"text": 1}, {"text": 2}]), tmp_path / "d.parquet")
    cfg = compose(f"dataset.files={tmp_path / 'd.parquet'}", _data_dir(tmp_path))
    problems = run_checks(cfg, 8, for_training=False).problems
    assert problems and 'd.parquet:row 1: "text" holds 1, not a string' in problems[0]

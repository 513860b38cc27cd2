"""Read a W&B offline run file (run-*.wandb) into its protobuf records.

wandb ships no Python reader for this file any more (its Go core writes it), so this follows
the documented layout of W&B's LevelDB-log style store: a 7-byte header (":W&B", 0xBEE1, version 0 or 1),
then 32 KiB blocks of chunks, each with a 7-byte header (crc32c, length, type: 1 full,
2 first, 3 middle, 4 last) holding serialized wandb_internal_pb2.Record messages.
"""

import struct
from pathlib import Path

BLOCK = 32768
HEADER = 7


def read_records(path: Path):
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    assert ident == b":W&B" and magic == 0xBEE1 and version in (0, 1), "not a W&B run file"
    pos, pending = HEADER, b""
    records = []
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            break
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def history(path: Path) -> list[dict]:
    """The logged history rows, values JSON-decoded."""
    import json

    rows = []
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                         for item in r.history.item})
    return rows

"""Shared by the shipped builders: read one JSON object per line from runner/assets/corpus."""

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[1] / "assets" / "corpus"


def generate_examples(path: Path):
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            yield i, json.loads(line)

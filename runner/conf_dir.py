"""Where the config groups live. conf/ is inside the package (package data, so a non-editable
install finds it too); the repository's top-level conf/ is a link to it."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"

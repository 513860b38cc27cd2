"""`python -m runner.export RUN_DIR`: a finished run's results as Hugging Face folders.

    python -m runner.export outputs/default/2026-11-24_10-00-00

writes RUN_DIR/export/merged (the trained model, LoRA merged in: transformers'
AutoModelForCausalLM.from_pretrained loads it), RUN_DIR/export/adapter (the LoRA adapter:
peft's PeftModel.from_pretrained(base, adapter) and vLLM's LoRA serving load it) and, when the
base was a keras-hub preset, RUN_DIR/export/base (the base the adapter applies to). Needs
transformers (the `export` extra; no torch). Exit 2 for a run it cannot export.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from runner import startup
from runner.errors import UserError
from runner.export.run import export
from runner.rundir import EXPORT_LOG, RunDir


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m runner.export",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder")
    return parser.parse_args(argv)


def _needs_transformers() -> None:
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(f"python -m runner.export needs transformers ({exc}); install it: "
                        "pip install -e '.[export]'") from None


@startup.command
def main(argv=None) -> int:
    args = _parse(argv)
    folder = RunDir(args.run_dir.resolve())
    cfg = folder.config()
    _needs_transformers()
    startup.start(cfg, join_program=False)
    startup.log_to_file(folder / EXPORT_LOG)

    for kind, path in export(folder).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m runner.generate RUN_DIR`: reload a run's LoRA adapter onto its base preset and
generate, on the run's own mesh and layout.

    python -m runner.generate outputs/default/2026-11-23_14-49-09 --prompt "The film" --max-length 40

It first recomputes the logits stored with the adapter (adapter_probe.npz) and prints the largest
difference, so a reload that is not the trained model cannot pass unnoticed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from runner import adapters, generation, layout, model, startup
from runner.plan.assemble import make_plan
from runner.presets import describe
from runner.rundir import RunDir


def _parse(argv):
    parser = argparse.ArgumentParser(prog="python -m runner.generate",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished run folder with adapter.lora.h5")
    parser.add_argument("--prompt", action="append", default=None,
                        help="a prompt (repeatable); default: the run's generate.prompts")
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    return parser.parse_args(argv)


def reload_and_generate(cfg, folder: RunDir, prompts, max_length) -> dict:
    import keras

    devices = keras.distribution.list_devices()
    described = describe(cfg.model)  # once, for the plan and the model
    the_plan, _ = make_plan(cfg, len(devices), described)
    the_plan.check()
    batch_axis_size = the_plan.axis_sizes[cfg.mesh.batch_axis]
    with layout.distribution(cfg.mesh, the_plan.placement_rules(), devices).scope():
        causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision,
                                          described=described)
        causal_lm.compile(sampler=generation.build_sampler(
            cfg.generate, cfg.seed, generation.vocabulary_limit(causal_lm)))
        probe_prompts = list(cfg.generate.prompts) or ["The"]
        _, base_logits = generation.probe_logits(causal_lm, causal_lm.preprocessor,
                                                 probe_prompts, batch_axis_size)
        adapters.load(causal_lm, folder)
        _, logits = generation.probe_logits(causal_lm, causal_lm.preprocessor, probe_prompts,
                                            batch_axis_size)
        prompts = prompts or list(cfg.generate.prompts)
        texts = generation.generate(causal_lm, prompts, max_length or cfg.generate.max_length,
                                    batch_axis_size)
    return {"max_abs_logit_difference": adapters.probe_difference(folder, logits),
            # the same without the adapter: how far off a reload that silently failed would be
            "base_max_abs_logit_difference": adapters.probe_difference(folder, base_logits),
            "samples": [{"prompt": p, "text": t} for p, t in zip(prompts, texts)]}


@startup.command
def main(argv=None) -> int:
    args = _parse(argv)
    folder = RunDir(args.run_dir)
    cfg = folder.config()
    startup.start(cfg, join_program=False)
    result = reload_and_generate(cfg, folder, args.prompt, args.max_length)
    print(f"adapter reloaded; largest logit difference from the training run: "
          f"{result['max_abs_logit_difference']:.3g}")
    for sample in result["samples"]:
        print(f"{sample['prompt']!r} -> {sample['text']!r}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

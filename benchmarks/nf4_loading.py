"""What loading a quant=nf4 model holds, in one command: building gemma_2b_en (random weights,
bfloat16, LoRA 16, mesh 1 x 8 on the 8 virtual CPU devices) one layer at a time
(runner/nf4_loading.py, what runs do) against loading the whole float model first and
quantizing it after (what runs did before).

    python benchmarks/nf4_loading.py       # prints the table, writes benchmarks/NF4_LOADING.md

The measure is what an accelerator would have to hold: the bytes of every live JAX array on
every device, taken as each layer is quantized (the same instrument as
tests/test_nf4_loading.py), its largest value. The process's peak resident memory is shown
too; on CPU it also counts what the allocator keeps after buffers are freed.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GB = 2**30
CONFIG = ["model=gemma_2b_en", "model.weights=random", "quant=nf4", "lora=rank16",
          "train.precision=bfloat16", "mesh=1x8", "layout=gemma_kv_replicated"]

WAYS = ("layer by layer", "float first")
NOTE = ("\"Held at most\" is what devices must hold: the arrays alive as each layer is quantized, "
        "each buffer once. The process's peak RSS also counts what the host allocator keeps "
        "after buffers are freed and XLA:CPU's compiles (Keras compiles each variable's "
        "initializer), so on CPU it is far above both.")

_PROGRAM = """
import json, random, resource, sys, time
from runner.startup import set_process_environment
set_process_environment(8)  # the 8 virtual CPU devices, before JAX starts
import jax
import numpy as np
import keras
from runner.config import compose
from runner import layout, model, nf4_layers
from runner.plan.assemble import make_plan

held = [0]
def held_bytes():  # every live buffer on every device, once (tests/test_nf4_loading.py)
    buffers = {}
    for a in jax.live_arrays():
        for s in a.addressable_shards:
            buffers[(s.device.id, s.data.unsafe_buffer_pointer())] = s.data.nbytes
    return sum(buffers.values())
def measuring(function):
    def measured(*args, **kwargs):
        held.append(held_bytes())
        return function(*args, **kwargs)
    return measured
nf4_layers.store = measuring(nf4_layers.store)  # both ways quantize each layer through it

way = sys.argv[1]
cfg = compose(sys.argv[2:])
devices = keras.distribution.list_devices()
the_plan, _ = make_plan(cfg, len(devices))
assert not the_plan.problems, the_plan.problems
random.seed(cfg.seed)
np.random.seed(cfg.seed)
start = time.perf_counter()
with layout.distribution(cfg.mesh, the_plan.placement_rules(), devices).scope():
    if way == "layer by layer":
        lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    elif way == "float first":
        lm = model.build_causal_lm(cfg.model, cfg.lora, None, cfg.train.precision)
        nf4_layers.quantize(lm.backbone, cfg.quant)
seconds = time.perf_counter() - start
model_bytes = sum(s.data.nbytes for v in lm.backbone.variables for s in v.value.addressable_shards)
print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak": max(held), "model": model_bytes, "seconds": seconds}))
"""


def measure(way: str) -> dict:
    env = dict(os.environ, RUNNER_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    proc = subprocess.run([sys.executable, "-c", _PROGRAM, way, *CONFIG], env=env,
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise RuntimeError(f"{way}: exited {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def render(rows: dict) -> str:
    lines = [f"Measured {datetime.date.today()} on {platform.machine()}, {os.cpu_count()} CPU "
             "cores, 8 virtual CPU devices. Command: `python benchmarks/nf4_loading.py`", "",
             f"Building `{' '.join(CONFIG)}`; bytes on all 8 devices together (split weights "
             "count once, replicated ones 8 times):", "",
             "| way | held at most while loading | the model it ends with | process peak RSS "
             "| built in |", "|---|---:|---:|---:|---:|"]
    for way in WAYS:
        r = rows[way]
        lines.append(f"| {way} | {r['peak'] / GB:.2f} GB | {r['model'] / GB:.2f} GB | "
                     f"{r['rss'] / GB:.2f} GB | {r['seconds']:.0f} s |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


def main() -> int:
    rows = {way: measure(way) for way in WAYS}
    text = render(rows)
    print(text)
    (ROOT / "benchmarks" / "NF4_LOADING.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

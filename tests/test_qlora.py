"""QLoRA out to the Hugging Face world: a quant=nf4 run's adapter, loaded with PEFT onto the
original base that transformers quantizes with the QLoRA source's BitsAndBytesConfig (4-bit NF4,
double quantization, bfloat16 compute), gives the runner's own logits (its adapter probe).

The tolerance: both sides compute in bfloat16, so they cannot agree closer than bfloat16's
rounding of the logits (its last bit at the probe's logit scale) compounded through the blocks;
and agreement must mean "the same 4-bit model", not merely "the same model": the runner's
logits must sit far closer to bitsandbytes' 4-bit ones than the full-precision model's do (a
quarter of that gap at most; measured here: 0.06 against 0.57 at the largest, 0.011 against
0.12 on average)."""

import numpy as np
import pytest
import torch  # in the test extra

from conftest import run_cli
from runner.rundir import EXPORT, EXPORT_ADAPTER, EXPORT_BASE, EXPORT_MERGED, PROBE, RunDir


def _peft_logits(run: RunDir, probe, four_bit: bool) -> np.ndarray:
    import transformers
    from peft import PeftModel

    extra = {"quantization_config": transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16)} if four_bit else {}
    base = transformers.AutoModelForCausalLM.from_pretrained(
        str(run.path / EXPORT / EXPORT_BASE), dtype=torch.bfloat16, device_map="cpu", **extra)
    peft = PeftModel.from_pretrained(base, str(run.path / EXPORT / EXPORT_ADAPTER)).eval()
    return _logits(peft, probe)


def _logits(hf_model, probe) -> np.ndarray:
    with torch.no_grad():
        return hf_model(input_ids=torch.tensor(probe["token_ids"].astype(np.int64)),
                        attention_mask=torch.tensor(probe["padding_mask"].astype(np.int64))
                        ).logits.float().numpy()


@pytest.mark.slow
def test_an_nf4_runs_adapter_on_the_bitsandbytes_base_gives_the_runners_logits(workdir):
    import transformers

    proc = run_cli("quant=nf4", "lora.dropout=0.05", "train.precision=bfloat16", "train.steps=6",
                   "train.log_every=3", "optimizer.learning_rate=0.01", "train.export_hf=true",
                   "generate.prompts=[]", "tracking.mode=disabled", "hydra.run.dir=run",
                   cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = RunDir(workdir / "run")
    probe = np.load(run.path / PROBE)
    ours = probe["logits"].astype(np.float32)
    real = probe["padding_mask"].astype(bool)
    four_bit = _peft_logits(run, probe, four_bit=True)
    full = _peft_logits(run, probe, four_bit=False)
    ours_gap = np.abs(ours - four_bit)[real]
    full_gap = np.abs(full - four_bit)[real]
    last_bit = 2.0 ** (np.floor(np.log2(np.abs(four_bit[real]).max())) - 7)
    assert ours_gap.max() <= 2 * last_bit, (ours_gap.max(), last_bit)
    assert ours_gap.max() <= 0.25 * full_gap.max() and ours_gap.mean() <= 0.25 * full_gap.mean()
    # export/merged: LoRA merged into the dequantized base (as PEFT's merge_and_unload), full
    # precision: the 4-bit model's logits too, within the same rounding
    merged = transformers.AutoModelForCausalLM.from_pretrained(
        str(run.path / EXPORT / EXPORT_MERGED), dtype=torch.float32, device_map="cpu")
    assert np.abs(_logits(merged, probe) - four_bit)[real].max() <= 2 * last_bit

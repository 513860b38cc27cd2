"""Every paper experiment runs in smoke form offline (`experiment=NAME debug=smoke`), keeping its
own settings; the adapter a run saves is reloaded by `python -m runner.generate` and gives the
same logits; and what Keras cannot do fails with a clear message instead of being skipped."""

import numpy as np
import pytest
import yaml

from conftest import CONF, run_cli
from runner.rundir import PROBE, RunDir

pytestmark = pytest.mark.slow

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def _smoke(name, workdir, *extra):
    proc = run_cli(f"experiment={name}", "debug=smoke", "hydra.run.dir=run", *extra,
                   cwd=workdir, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    folder = RunDir(workdir / "run")
    return folder.path, folder.summary(), folder.resolved_config(), folder.metrics()


@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mtnt")
    # lr 0.05 (the experiment's is 1e-4): six steps must move the adapter far enough that a
    # reload which silently failed would show in the logits
    return _smoke("gemma2b_mtnt_translation", workdir, "train.save_merged_preset=true",
                  "optimizer.learning_rate=0.05")


@pytest.mark.parametrize("name", [e for e in EXPERIMENTS if e != "gemma2b_mtnt_translation"])
def test_experiment_runs_in_smoke_form(name, workdir):
    # sampling is exercised by the translation run; here it would only add compile time
    run_dir, summary, resolved, metrics = _smoke(name, workdir, "tracking.mode=disabled",
                                                 "generate.prompts=[]")
    assert summary["status"] == "finished" and summary["steps"] == 6
    assert resolved["model"]["preset"] == "tiny_gemma"
    assert resolved["dataset"]["name"] == resolved["dataset"]["stand_in"]
    assert [m["step"] for m in metrics if "loss" in m] == [2, 4, 6]
    source = yaml.safe_load((CONF / "experiment" / f"{name}.yaml").read_text())
    if "optimizer" in source:  # the experiment's own value survives debug=smoke
        assert resolved["optimizer"]["learning_rate"] == pytest.approx(
            float(source["optimizer"]["learning_rate"]))
    if resolved["lora"]["rank"]:
        assert (run_dir / "adapter.lora.h5").is_file()
    if name == "qlora_prompts":
        _check_qlora_recipe(run_dir, resolved)


def _check_qlora_recipe(run_dir, resolved):
    assert resolved["quant"] == {"mode": "nf4", "block_size": 64, "double_quant": True,
                                 "compute_dtype": "bfloat16"}
    assert resolved["lora"] == {"rank": 16, "alpha": 16.0, "dropout": 0.05,
                                "targets": ["query", "key", "value", "attention_output"]}
    tsv = (run_dir / "sharding.tsv").read_text()
    # the key kernel (8 x 128 x 16) as NF4: 128 outputs x 128 inputs, two codes a byte
    assert "decoder_block_0/attention/key/nf4_codes\tweight\t128x64\tuint8" in tsv
    assert "decoder_block_0/attention/key/kernel" not in tsv
    assert "decoder_block_0/attention/key/lora_dropout/seed_generator_state" in tsv
    assert "decoder_block_0/attention/attention_output/lora_kernel_a" in tsv
    assert "ffw_linear/lora_kernel" not in tsv  # only the chosen targets


def test_translation_smoke_evaluates_and_samples(translation_run):
    run_dir, summary, resolved, metrics = translation_run
    assert summary["status"] == "finished" and summary["steps"] == 6
    evals = [m for m in metrics if "eval_loss" in m]
    assert [m["step"] for m in evals] == [3, 6]
    assert summary["final_eval_loss"] == pytest.approx(evals[-1]["eval_loss"])
    assert resolved["optimizer"]["name"] == "sgd" and resolved["train"]["batch_size"] == 1
    assert resolved["generate"]["sampler"] == "top_k"
    samples = RunDir(run_dir).samples()
    assert len(samples) == 1 and samples[0]["after"]


def test_adapter_reloads_onto_its_base_with_the_same_logits(translation_run, workdir):
    run_dir = translation_run[0]
    out = workdir / "reload.json"
    proc = run_cli("--out", str(out), str(run_dir), module="runner.generate", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-5000:]
    import json

    result = json.loads(out.read_text())
    assert result["max_abs_logit_difference"] < 1e-4
    # without the adapter the logits are far off: the comparison would catch a failed reload
    assert result["base_max_abs_logit_difference"] > 1e-2
    assert "largest logit difference" in proc.stdout


def test_merged_preset_equals_base_plus_adapter(translation_run):
    import keras_hub

    from runner.generation import probe_logits

    run_dir = translation_run[0]
    merged = keras_hub.models.CausalLM.from_preset(str(run_dir / "merged_preset"))
    assert not any("lora" in v.path for v in merged.backbone.variables)
    prompts = translation_run[2]["generate"]["prompts"]
    _, logits = probe_logits(merged, merged.preprocessor, prompts, 1)
    stored = np.load(run_dir / PROBE)["logits"]
    assert np.max(np.abs(stored - logits)) < 1e-4


@pytest.mark.parametrize("overrides,words", [
    (["lora.dropout=0.05", "quant=int8"], ["lora.dropout=0.05 with quant=int8", "no dropout"]),
    (["quant=int4", "quant.double_quant=true"], ["quant.double_quant=true with quant=int4",
                                                 "quant.double_quant=false"]),
    (["quant=int8", "lora=none"], ["quant=int8 with lora.rank=0", "frozen"]),
    (["optimizer.schedule=constant", "optimizer.warmup_steps=10"], ["optimizer.warmup_steps"]),
], ids=["lora_dropout", "int4_double_quant", "quant_without_lora", "warmup_without_schedule"])
def test_unsupported_combinations_fail_clearly(workdir, overrides, words):
    proc = run_cli(*overrides, "hydra.run.dir=run", cwd=workdir)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert all(w in proc.stderr for w in words), proc.stderr[-2000:]

"""TRL 1.16's own preference losses and metrics for given Hugging Face model folders and given token
ids: the reference another implementation is compared against. A helper module, not a test file.

    trl_preference_metrics(objective, policy_dir, pairs, reference_dir=None, beta=0.1,
                           loss_type="sigmoid", label_smoothing=0.0, gamma=0.0) -> dict[str, float]

`pairs` holds (prompt_ids, chosen_ids, rejected_ids): prompt_ids already start with BOS, chosen_ids
and rejected_ids already end with EOS. Nothing is tokenized by TRL: the ids go straight into the
trainer's own data collator and then its own loss code, as ONE batch holding every pair. Models
load in float32 on the CPU and stay in eval mode (TRL's disable_dropout is on as well).

What each objective runs (all TRL code; this module only builds the trainer and the rows):

- "dpo": `trl.DPOTrainer` (config `trl.DPOConfig`) with the policy as `model` and the folder
  `reference_dir` loaded as `ref_model`. The batch is `trainer.data_collator(rows)`
  (`trl.trainer.dpo_trainer.DataCollatorForPreference`, rows {"prompt_ids", "chosen_ids",
  "rejected_ids"}), moved by `trainer._prepare_inputs`, then `trainer.compute_loss(model, batch)`
  (which runs `DPOTrainer._compute_loss`: the loss is inline there since TRL 0.29). The metrics
  are what `_compute_loss` appends to `trainer._metrics["eval"]` (the model is in eval mode, so
  TRL files them under "eval"; `DPOTrainer.log` would average each list, here one value each).
  DPOTrainer patches both models with its fused LM head (`trl.trainer.utils.add_fused_lm_head`),
  so the log-probs come from TRL's own chunked kernel (`model(..., labels, fused_lm_head=True)`).
  Token coverage: `completion_mask` is 1 exactly on chosen_ids / rejected_ids (EOS included,
  prompt excluded); per-sequence log-probs are SUMS over those tokens (`ld_alpha` is None), for
  the policy and for the reference. rewards = beta * (logp_policy - logp_reference).
  `loss_type` is DPOConfig.loss_type. NB: in TRL 1.16 the "sigmoid" loss ignores
  `label_smoothing` (-logsigmoid(beta * delta) only); label_smoothing only enters "robust",
  "exo_pair", "aot" and "aot_unpaired".
- "orpo": `trl.experimental.orpo.ORPOTrainer` (config ORPOConfig, beta = ORPO's lambda). The rows
  are built here in the exact format of `ORPOTrainer.tokenize_row` (prompt_input_ids,
  chosen_input_ids = prompt + chosen, chosen_labels = the same with the prompt positions -100,
  attention masks of ones, and the same for rejected), padded by the trainer's own collator
  (`trl.experimental.utils.DPODataCollatorWithPadding`), then
  `trainer.get_batch_loss_metrics(model, batch, train_eval="train")` (concatenated_forward ->
  get_batch_logps(average_log_prob=True) -> odds_ratio_loss). Token coverage:
  * logps/chosen, logps/rejected, rewards, log odds: per-sequence MEANS of the response-token
    log-probs (chosen_ids / rejected_ids incl. EOS; prompt excluded); rewards = beta * mean logp.
  * nll_loss: NOT response-only. ORPO's concatenated_forward takes its NLL labels from
    `concatenated_input_ids` with only the padding masked (`attention_mask == 0 -> -100`; the
    code says "orpo chosen nll loss is computed over the full prompt and response"), so it is
    torch's CrossEntropyLoss (mean) over every target position of the CHOSEN sequences
    prompt+chosen, i.e. the tokens at positions 1 .. len(prompt)+len(chosen)-1: all prompt tokens
    except the first one (BOS, never a target), plus all chosen response tokens incl. EOS. It is
    one token-weighted mean pooled over the whole batch (not a mean of per-sequence means).
    Rejected sequences never enter the NLL.
  * loss = nll_loss - beta * mean_i logsigmoid(log_odds_i); log_odds_ratio = mean logsigmoid(
    log_odds), log_odds_chosen = mean log_odds. `loss_type` must be "sigmoid" (the default) or
    "orpo", `label_smoothing` and `gamma` 0.
- "simpo": `trl.experimental.cpo.CPOTrainer` with CPOConfig(loss_type="simpo", cpo_alpha=0.0,
  simpo_gamma=gamma, label_smoothing=label_smoothing, alpha=0.0); rows, collator and
  `get_batch_loss_metrics` as for ORPO. Token coverage: per-sequence MEANS over the response
  tokens (average_log_prob=True for "simpo"); loss = -logsigmoid(beta*(avg_c - avg_r) - gamma)
  (label smoothing mixes in -logsigmoid(-...)); rewards = beta * mean logp; nll_loss is 0.0
  (cpo_alpha = 0). `loss_type` must be "sigmoid" (the default) or "simpo".

Truncation: DPOConfig.max_length=None (the DPO collator truncates nothing); ORPO/CPO's max_length
only acts in tokenize_row, which is bypassed (set large anyway). After collation the helper asserts
that each row holds exactly prompt + response (right padding only) and that the completion mask /
labels mark exactly the response tokens, so a TRL change there fails loudly.

The returned dict holds every metric TRL computed for the batch (also e.g. "logits/chosen",
"entropy"), all floats; "loss" is the trainer's loss. The tokenizer handed to TRL as
`processing_class` is an in-memory word-level one whose token i is "<id_i>" for every id of the
model's vocabulary, with BOS/EOS/PAD taken from the policy's config: TRL only uses it for the
pad id and to tokenize a throw-away one-row `train_dataset` the trainers require; the measured
ids never pass through it.
"""

from __future__ import annotations

import os
import tempfile
import warnings

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # trl.experimental warns on import

METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")
ORPO_METRICS = METRICS + ("nll_loss", "log_odds_ratio", "log_odds_chosen")


def _load(folder: str):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.to("cpu").float().eval()


def _tokenizer(config):
    """An in-memory word-level tokenizer: token i is "<id_i>", one per id of the vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    text = config.get_text_config()
    size = text.vocab_size
    tok = Tokenizer(models.WordLevel({f"<id_{i}>": i for i in range(size)}, unk_token="<id_0>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()

    def token_id(name, fallback):
        value = getattr(text, name, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return fallback if value is None or not 0 <= value < size else value

    eos = token_id("eos_token_id", size - 1)
    bos = token_id("bos_token_id", eos)
    pad = token_id("pad_token_id", eos)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=f"<id_{bos}>",
                                   eos_token=f"<id_{eos}>", pad_token=f"<id_{pad}>",
                                   unk_token="<id_0>")


def _dummy_dataset(tokenizer):
    """The one-row text dataset the trainers insist on; it is tokenized by TRL and never used."""
    from datasets import Dataset

    eos = " " + tokenizer.eos_token
    return Dataset.from_dict({"prompt": [tokenizer.bos_token], "chosen": [eos], "rejected": [eos]})


def _common_args(output_dir: str) -> dict:
    return {"output_dir": output_dir, "report_to": [], "use_cpu": True, "bf16": False,
            "fp16": False, "gradient_checkpointing": False, "disable_dropout": True,
            "dataset_num_proc": None, "per_device_train_batch_size": 1, "save_strategy": "no",
            "seed": 0}


def _check_pairs(pairs):
    if not pairs:
        raise ValueError("pairs is empty")
    rows = []
    for prompt, chosen, rejected in pairs:
        prompt, chosen, rejected = ([int(t) for t in ids] for ids in (prompt, chosen, rejected))
        if not prompt or not chosen or not rejected:
            raise ValueError("prompt_ids, chosen_ids and rejected_ids need one id each at least")
        rows.append((prompt, chosen, rejected))
    return rows


def _dpo(policy, reference, tokenizer, rows, beta, loss_type, label_smoothing, output_dir):
    import torch
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**_common_args(output_dir), beta=beta, loss_type=loss_type,
                     label_smoothing=label_smoothing, max_length=None,
                     precompute_ref_log_probs=False, padding_free=False, pad_to_multiple_of=None,
                     use_weighting=False, ld_alpha=None, f_divergence_type="reverse_kl",
                     sync_ref_model=False)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args,
                         train_dataset=_dummy_dataset(tokenizer), processing_class=tokenizer)
    trainer.model.eval()
    trainer.ref_model.eval()
    examples = [{"prompt_ids": p, "chosen_ids": c, "rejected_ids": r} for p, c, r in rows]
    batch = trainer._prepare_inputs(trainer.data_collator(examples))
    _check_dpo_batch(batch, rows)
    for mode in ("train", "eval"):
        trainer._metrics[mode].clear()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
    mode = "train" if trainer.model.training else "eval"
    metrics = {k: float(v[-1]) for k, v in trainer._metrics[mode].items()}
    metrics["loss"] = float(loss)
    return metrics


def _check_dpo_batch(batch, rows):
    """The collated ids must be prompt + response exactly, the completion mask the response."""
    n = len(rows)
    for i, (p, c, r) in enumerate(rows):
        for row, resp in ((i, c), (n + i, r)):
            length = len(p) + len(resp)
            ids = batch["input_ids"][row].tolist()
            mask = batch["completion_mask"][row].tolist()
            att = batch["attention_mask"][row].tolist()
            assert ids[:length] == p + resp, "TRL's collator changed the ids"
            assert mask[:length] == [0] * len(p) + [1] * len(resp) and not any(mask[length:])
            assert att[:length] == [1] * length and not any(att[length:])


def _tokenize_row_format(rows):
    """Rows in the format of ORPOTrainer/CPOTrainer.tokenize_row (decoder-only branch)."""
    out = []
    for p, c, r in rows:
        row = {"prompt_input_ids": list(p), "prompt_attention_mask": [1] * len(p)}
        for name, resp in (("chosen", c), ("rejected", r)):
            ids = list(p) + list(resp)
            row[f"{name}_input_ids"] = ids
            row[f"{name}_attention_mask"] = [1] * len(ids)
            row[f"{name}_labels"] = [-100] * len(p) + list(resp)
        out.append(row)
    return out


def _orpo_or_cpo(objective, policy, tokenizer, rows, beta, label_smoothing, gamma, output_dir):
    import torch

    common = dict(**_common_args(output_dir), beta=beta, max_length=1 << 30,
                  max_completion_length=None, generate_during_eval=False,
                  remove_unused_columns=False)
    if objective == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        trainer_cls, args = ORPOTrainer, ORPOConfig(**common, padding_value=None)
    else:
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        trainer_cls = CPOTrainer
        args = CPOConfig(**common, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=gamma,
                         label_smoothing=label_smoothing, alpha=0.0)
    trainer = trainer_cls(model=policy, args=args, train_dataset=_dummy_dataset(tokenizer),
                          processing_class=tokenizer)
    trainer.model.eval()
    batch = trainer._prepare_inputs(trainer.data_collator(_tokenize_row_format(rows)))
    for i, (p, c, r) in enumerate(rows):  # right padding only: the collated ids are our ids
        for name, resp in (("chosen", c), ("rejected", r)):
            length = len(p) + len(resp)
            assert batch[f"{name}_input_ids"][i, :length].tolist() == p + resp
            assert batch[f"{name}_labels"][i].tolist() == (
                [-100] * len(p) + resp + [-100] * (batch[f"{name}_labels"].shape[1] - length))
            assert batch[f"{name}_attention_mask"][i].sum().item() == length
    with torch.no_grad():
        loss, metrics = trainer.get_batch_loss_metrics(trainer.model, batch, train_eval="train")
    metrics = {k: float(v) for k, v in metrics.items()}
    metrics["loss"] = float(loss)
    return metrics


def trl_preference_metrics(objective: str, policy_dir: str,
                           pairs: list[tuple[list[int], list[int], list[int]]],
                           reference_dir: str | None = None, beta: float = 0.1,
                           loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                           gamma: float = 0.0) -> dict[str, float]:
    """TRL 1.16's loss and metrics for one batch of all `pairs` (see the module docstring)."""
    if objective not in ("dpo", "orpo", "simpo"):
        raise ValueError(f"objective must be 'dpo', 'orpo' or 'simpo', not {objective!r}")
    if objective == "dpo" and reference_dir is None:
        raise ValueError("objective 'dpo' needs reference_dir")
    if objective != "dpo" and reference_dir is not None:
        raise ValueError(f"objective {objective!r} uses no reference model")
    if objective != "dpo" and loss_type not in ("sigmoid", objective):
        raise ValueError(f"loss_type {loss_type!r} applies to 'dpo' only")
    if objective != "simpo" and gamma != 0.0:
        raise ValueError("gamma is SimPO's margin; it applies to 'simpo' only")
    if objective == "orpo" and label_smoothing != 0.0:
        raise ValueError("ORPO has no label smoothing")
    rows = _check_pairs(pairs)

    import datasets

    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # the throw-away dataset's map bars
    try:
        with tempfile.TemporaryDirectory(prefix="trl-reference-") as output_dir, \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            metrics = _run(objective, policy_dir, reference_dir, rows, beta, loss_type,
                           label_smoothing, gamma, output_dir)
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    required = ORPO_METRICS if objective == "orpo" else METRICS
    missing = [k for k in required if k not in metrics]
    if missing:
        raise RuntimeError(f"TRL reported no {missing}; it reported {sorted(metrics)}")
    return metrics


def _run(objective, policy_dir, reference_dir, rows, beta, loss_type, label_smoothing, gamma,
         output_dir):
    policy = _load(policy_dir)
    tokenizer = _tokenizer(policy.config)
    if objective == "dpo":
        return _dpo(policy, _load(reference_dir), tokenizer, rows, beta, loss_type,
                    label_smoothing, output_dir)
    return _orpo_or_cpo(objective, policy, tokenizer, rows, beta, label_smoothing, gamma,
                        output_dir)

"""What a training step optimizes and measures: the loss, the metrics and the sampler a CausalLM
is compiled with, and the runner's own step (runner.step) that computes them in one pass over
the logits. Shared by the run (runner.train) and the compiled-memory check
(runner.plan.compiled), so the step XLA sizes is the step that trains."""

from __future__ import annotations

from runner import documents, generation, step

# train.loss_tiles=auto: tiles whose float32 logits stay under this many bytes per device.
# Each tile reads the whole output layer twice (logits, and the hidden states' gradient), so
# small tiles trade memory for bandwidth: gemma3_270m at 8 x 64 tokens on one CPU device took
# 2.7 s a step untiled (512 MiB of logits) and 4.6 s in 8 tiles of 64 MiB.
TILE_BYTES = 512 * 2**20


def compile_for_training(causal_lm, optimizer, generate_cfg, train_cfg, batch_axis_size: int,
                         seed: int, objective_cfg=None, pad_id: int = 0) -> None:
    """Compile `causal_lm` for train_cfg's step: its loss tiles (train.loss_tiles) and
    micro-batches (train.gradient_accumulation_steps), the batch split `batch_axis_size` ways;
    objective_cfg: a preference objective (runner/preference_step.py), or sft (None too).
    pad_id: the tokenizer's padding token (ORPO's NLL leaves it out)."""
    import keras

    from runner import preference_step
    from runner.metrics import PreferenceMetrics, TokenMetrics

    metrics = TokenMetrics()  # loss, tokens and accuracy, from the loss's own pass
    preference = preference_step.of_config(objective_cfg)
    extra_metrics, installed = [], None
    if preference is not None:
        pair_metrics = PreferenceMetrics(preference_step.metric_names(preference))
        extra_metrics, installed = [pair_metrics], (preference, pair_metrics, int(pad_id))
    causal_lm.compile(
        optimizer=optimizer,
        # What Keras's own step would use (generate() and predict() do not look at it); the
        # runner's step computes the same loss, averaged over real tokens only: padding and
        # prompt tokens have sample weight 0.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[metrics, *extra_metrics],
        sampler=generation.build_sampler(generate_cfg, seed,
                                         generation.vocabulary_limit(causal_lm)),
    )
    documents.prepare(causal_lm.backbone)  # packed rows (dataset.packing) mask per document
    step.install(causal_lm, metrics, loss_tiles(train_cfg, batch_axis_size,
                                                causal_lm.backbone.vocabulary_size,
                                                objective_cfg),
                 int(train_cfg.gradient_accumulation_steps), installed)


def rows_per_step(train_cfg, objective_cfg) -> int:
    """The model's rows per step: train.batch_size examples, or for a preference objective
    train.batch_size pairs of two rows each (chosen, rejected)."""
    preference = objective_cfg is not None and str(objective_cfg.name) != "sft"
    return train_cfg.batch_size * (2 if preference else 1)


def has_reference(objective_cfg) -> bool:
    """Whether each step also runs the reference model forward (DPO)."""
    return objective_cfg is not None and str(objective_cfg.name) == "dpo"


def needs_reference_copy(objective_cfg, lora_cfg) -> bool:
    """DPO without LoRA: the one case whose reference the policy's own weights cannot give
    (runner/reference_model.py builds it)."""
    return has_reference(objective_cfg) and (lora_cfg is None or lora_cfg.rank <= 0)


def plan_notes(objective_cfg, lora_cfg) -> list[str]:
    """What the plan says of a preference objective's reference model."""
    name = str(objective_cfg.name)
    if name == "sft":
        return []
    if name != "dpo":
        return [f"objective={name} needs no reference model"]
    if lora_cfg.rank > 0:
        return ["objective=dpo: the reference model is the base with the adapter off, so the "
                "frozen weights above are its weights too (no second copy); each step runs one "
                "more forward pass for it, which keeps no activations for the backward pass"]
    return ["objective=dpo with full fine-tuning: the reference model is a frozen copy of the "
            "starting weights, listed above under reference/ and sharded like the policy (a "
            "second copy of the base per device); each step runs one more forward pass for it, "
            "which keeps no activations for the backward pass"]


def loss_tiles(train_cfg, batch_axis_size: int, vocabulary: int, objective_cfg=None) -> int:
    """train.loss_tiles as a number: auto is the fewest slices of the sequence whose float32
    logits (per device, per micro-batch) fit TILE_BYTES."""
    tiles = train_cfg.loss_tiles
    if str(tiles) != "auto":
        return int(tiles)
    micro = rows_per_step(train_cfg, objective_cfg) // int(train_cfg.gradient_accumulation_steps)
    return auto_tiles(max(1, micro // max(1, batch_axis_size)), train_cfg.sequence_length,
                      vocabulary)


def auto_tiles(batch_per_device: int, sequence_length: int, vocabulary: int,
               tile_bytes: int = TILE_BYTES) -> int:
    """The fewest tiles dividing the sequence whose float32 logits fit `tile_bytes` each (a tile
    is a slice of the sequence, so the batch keeps its sharding)."""
    whole = batch_per_device * sequence_length * vocabulary * 4
    for tiles in range(1, sequence_length + 1):
        if sequence_length % tiles == 0 and whole / tiles <= tile_bytes:
            return tiles
    return sequence_length

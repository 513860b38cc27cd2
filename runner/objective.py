"""What a training step optimizes and measures: the loss, the metrics and the sampler a CausalLM
is compiled with. Shared by the run (runner.train) and the compiled-memory check
(runner.plan.compiled), so the step XLA sizes is the step that trains."""

from __future__ import annotations

from runner import generation


def compile_for_training(causal_lm, optimizer, generate_cfg, seed: int) -> None:
    import keras

    from runner.metrics import TokenMetrics

    causal_lm.compile(
        optimizer=optimizer,
        # Averaged over real tokens only: padding and prompt tokens have sample weight 0.
        loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction="mean_with_sample_weight"),
        weighted_metrics=[TokenMetrics()],  # loss, tokens and accuracy in one pass
        sampler=generation.build_sampler(generate_cfg, seed,
                                         generation.vocabulary_limit(causal_lm)),
    )

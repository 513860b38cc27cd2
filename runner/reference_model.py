"""Full fine-tuning DPO's reference model: a frozen copy of the base, sharded like the policy.

Under LoRA the reference is the base with the adapter switched off (runner/preference_step.py
`adapters_off`: no second copy). A full fine-tune changes every weight, so the reference must be
its own copy of the starting weights. It is a backbone of the same architecture built under the
name scope `reference/` (its variables are reference/decoder_block_0/..., beside the policy's
decoder_block_0/...), frozen, attached to the CausalLM so that Keras's step carries its values
with the other non-trainable state, and given the policy's starting values (the preset's,
a Hugging Face folder's, or the seeded random ones), so it is exactly the model DPO measures
against whatever the weights came from.

The plan lists its variables with the policy's specs (`planned`), so `python -m runner.plan`
counts the second copy and the placement check holds it to them. Checkpoints do not hold it
(runner/checkpoints.py saves the trainable weights, optimizer, metrics and seeds): a resumed run
builds it again from the same starting weights before restoring the policy.
"""

from __future__ import annotations

import dataclasses

from runner.backbones import stable_names
from runner.families import correct

PREFIX = "reference"
KIND = "reference"  # its plan entries' kind: frozen weights, not the model's own parameters
_ATTRIBUTE = "reference_backbone"


def frozen_copy(backbone):
    """A backbone of `backbone`'s architecture under PREFIX/, not trainable, with its own
    (freshly initialised, or under a no-memory scope abstract) variables. Build it inside the
    distribution's scope so its variables are born with their layout."""
    import keras

    with stable_names(), keras.name_scope(PREFIX):
        copy = type(backbone).from_config(backbone.get_config())
    correct(copy)
    copy.trainable = False
    return copy


def attach(causal_lm, copy_values: bool = True):
    """Give `causal_lm` its frozen reference (returned): the policy's backbone copied, value for
    value when `copy_values` (a real run; the plan's abstract model has no values)."""
    copy = frozen_copy(causal_lm.backbone)
    ours, theirs = causal_lm.backbone.weights, copy.weights
    paths = [v.path for v in ours]
    if [v.path.split("/", 1)[1] for v in theirs] != paths:  # the same architecture, same order
        raise RuntimeError("the reference copy's variables differ from the policy's (a runner "
                           "bug)")
    if copy_values:
        import jax.numpy as jnp

        for source, target in zip(ours, theirs):
            # its own buffer (same sharding): Keras donates the step's state, and one buffer
            # behind two variables would be donated twice
            target.assign(jnp.copy(source.value))
    setattr(causal_lm, _ATTRIBUTE, copy)  # tracked: its variables join the non-trainable state
    return copy


def of(causal_lm):
    """The CausalLM's frozen reference backbone, or None (LoRA or no DPO: none is needed)."""
    return getattr(causal_lm, _ATTRIBUTE, None)


def planned(the_plan):
    """The plan with the reference's variables added: each of the policy's weights again under
    PREFIX/, with its spec (sharded like the policy), frozen, of kind KIND."""
    copies = [dataclasses.replace(e, path=f"{PREFIX}/{e.path}", kind=KIND, trainable=False)
              for e in the_plan.entries if e.kind != "optimizer"]
    return dataclasses.replace(the_plan, entries=the_plan.entries + copies)

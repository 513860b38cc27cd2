"""The backbone of a keras-hub CausalLM run statelessly under given variable values: the hidden
states the step's losses (runner/step.py, runner/preference_step.py) compute their output layer
over, tile by tile."""

from __future__ import annotations

import contextlib

from runner import documents


def backbone_pass(lm, trainable, non_trainable, x, training: bool, backbone=None):
    """(hidden states, extra, the updated non-trainable values, the output layer as
    head(values, hidden) -> logits, its values, which of them train): the backbone under the
    given values. `extra`: the losses the model adds itself (Mixtral's router load-balancing
    loss), summed, as Keras adds them. `backbone`: another backbone whose variables are among
    the model's (full fine-tuning DPO's frozen reference, runner/reference_model.py)."""
    import keras

    backbone = backbone if backbone is not None else lm.backbone

    mapping = list(zip(lm.trainable_variables, trainable)) + \
        list(zip(lm.non_trainable_variables, non_trainable))
    x, packed = documents.split(x)  # packed rows: attention and positions per document
    with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope, \
            documents.documents(*packed) if packed else contextlib.nullcontext():
        hidden = backbone(x, training=training)
        extra = sum((keras.ops.sum(keras.ops.cast(loss, "float32"))
                     for loss in backbone.losses), keras.ops.zeros((), "float32"))
    updated = []
    for variable, value in zip(lm.non_trainable_variables, non_trainable):
        new = scope.get_current_value(variable)  # seed generators move on; weights do not
        updated.append(value if new is None else new)
    # Every keras-hub CausalLM the runner trains maps hidden states to logits with the
    # backbone's token embedding in reverse (tied or not, soft-capped or not, quantized or not);
    # tests/test_step.py checks the loss against Keras's step over the model's own logits in
    # every family.
    head_layer = backbone.token_embedding
    values = {id(v): value for v, value in mapping}
    head_variables = list(head_layer.variables)

    def head(head_values, h):
        with keras.StatelessScope(state_mapping=list(zip(head_variables, head_values))):
            return head_layer(h, reverse=True)
    return (hidden, extra, updated, head, [values[id(v)] for v in head_variables],
            [v.trainable for v in head_variables])

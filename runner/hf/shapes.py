"""transformers' tensor names and shapes for a checkpoint's config.json, from the config alone.

Two consumers: the import check compares a folder's safetensors headers against them (a
config.json that disagrees with its weights is named before any weight loads), and the export
records keras-hub's converter map against them (so `python -m runner.export` needs no torch:
transformers' own way to get them builds the model on torch's meta device). tests/test_hf_files.py
checks the table against that torch-built model for every model type the runner converts.

Every layer of these decoders has the same tensors: attention projections, a gated MLP and
RMSNorms; the model types differ in a few of them (each family's hf_layer_tensors).
"""

from __future__ import annotations

from runner.errors import UserError
from runner.families import FAMILIES


def _family_of(model_type: str):
    return next(f for f in FAMILIES.values() if model_type in f.hf_model_types)


def _extra_tensors() -> dict:
    """model_type -> tensors its layers add, as each family states (Family.hf_layer_tensors)."""
    return {t: extra for f in FAMILIES.values() for t, extra in f.hf_layer_tensors.items()}


MODEL_TYPES = tuple(_extra_tensors())


def _widths(hf_config: dict) -> dict:
    hidden, heads = hf_config["hidden_size"], hf_config["num_attention_heads"]
    head = hf_config.get("head_dim") or hidden // heads
    kv_heads = hf_config.get("num_key_value_heads") or heads
    return {"hidden": hidden, "head": head, "query": heads * head, "kv": kv_heads * head,
            "ffw": hf_config["intermediate_size"], "vocab": hf_config["vocab_size"]}


def tensor_shapes(hf_config: dict) -> dict[str, tuple]:
    """{state-dict key: shape} of transformers' causal LM for `hf_config` (lm_head included
    even where it is tied to the embeddings: the converters ask for it only when it is not)."""
    model_type = hf_config.get("model_type")
    extra = _extra_tensors()
    if model_type not in extra:
        raise UserError(f"model_type '{model_type}' has no tensor table here; supported: "
                        f"{list(MODEL_TYPES)}")
    try:
        w = _widths(hf_config)
        layers = int(hf_config["num_hidden_layers"])
    except KeyError as missing:
        raise UserError(f"config.json has no {missing} field, which a {model_type} model "
                        "needs") from None
    moe = _family_of(model_type).hf_mlp_tensors
    mlp = moe(w, hf_config) if moe else {"mlp.gate_proj.weight": (w["ffw"], w["hidden"]),
                                         "mlp.up_proj.weight": (w["ffw"], w["hidden"]),
                                         "mlp.down_proj.weight": (w["hidden"], w["ffw"])}
    per_layer = {
        "self_attn.q_proj.weight": (w["query"], w["hidden"]),
        "self_attn.k_proj.weight": (w["kv"], w["hidden"]),
        "self_attn.v_proj.weight": (w["kv"], w["hidden"]),
        "self_attn.o_proj.weight": (w["hidden"], w["query"]),
        **mlp,
        "input_layernorm.weight": (w["hidden"],),
        "post_attention_layernorm.weight": (w["hidden"],),
        **{name: (w[width],) for name, width in extra[model_type]},
    }
    shapes = {"model.embed_tokens.weight": (w["vocab"], w["hidden"])}
    for i in range(layers):
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in per_layer.items()})
    shapes["model.norm.weight"] = (w["hidden"],)
    shapes["lm_head.weight"] = (w["vocab"], w["hidden"])
    return shapes

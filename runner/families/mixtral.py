"""Mixtral (8x7B, 8x22B): Mistral's attention with a sparse mixture of experts in place of the
feed-forward network. keras-hub has no layout map for it: layout=auto is derived (the experts
dimension splits over the model axis)."""

from __future__ import annotations

from runner.families._hf import SENTENCEPIECE, common_fields
from runner.families.family import Family, Tiny


def to_hf(b) -> tuple[str, dict]:
    return "mixtral", {**common_fields(b), "rope_theta": b.rope_max_wavelength,
                       "sliding_window": b.sliding_window, "num_local_experts": b.num_experts,
                       "num_experts_per_tok": b.top_k, "tie_word_embeddings": False}


def hf_mlp_tensors(w: dict, hf_config: dict) -> dict:
    """Each layer's router and experts, as Mixtral checkpoints store them (one tensor per expert
    and projection; transformers fuses them in memory only)."""
    experts = int(hf_config["num_local_experts"])
    tensors = {"block_sparse_moe.gate.weight": (experts, w["hidden"])}
    for e in range(experts):
        tensors[f"block_sparse_moe.experts.{e}.w1.weight"] = (w["ffw"], w["hidden"])
        tensors[f"block_sparse_moe.experts.{e}.w2.weight"] = (w["hidden"], w["ffw"])
        tensors[f"block_sparse_moe.experts.{e}.w3.weight"] = (w["ffw"], w["hidden"])
    return tensors


def hf_config_problem(hf_config: dict):
    """keras-hub 0.32's convert_mixtral has no tied head and ignores rope scaling and head_dim:
    such a checkpoint would load with other numbers than its publisher's."""
    hidden, heads = hf_config.get("hidden_size"), hf_config.get("num_attention_heads")
    if hf_config.get("tie_word_embeddings"):
        return "tie_word_embeddings=true, which keras-hub's MixtralBackbone cannot tie"
    if hf_config.get("rope_scaling"):
        return "rope_scaling is set, which keras-hub's Mixtral converter ignores"
    head_dim = hf_config.get("head_dim")
    if head_dim and hidden and heads and head_dim != hidden // heads:
        return f"head_dim={head_dim} is not hidden_size / num_attention_heads, which " \
               "keras-hub's MixtralBackbone assumes"
    return None


FAMILY = Family(
    name="mixtral", backbone="MixtralBackbone", hf_model_types=("mixtral",),
    converter="convert_mixtral", hf_tokenizer_files=SENTENCEPIECE,
    block_stem="transformer_layer_", chat_template="mistral", chat_templates=("mistral",),
    to_hf=to_hf, hf_layer_tensors={"mixtral": ()}, hf_mlp_tensors=hf_mlp_tensors,
    hf_config_problem=hf_config_problem, auto_layout="derived",
    tiny={"mixtral": Tiny("MixtralConfig", {"rms_norm_eps": 1e-5, "num_local_experts": 4,
                                            "num_experts_per_tok": 2}, "mistral_spm")})

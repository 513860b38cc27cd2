"""The model builder: LoRA rank, alpha and targets honoured exactly."""

from conftest import compose


def test_lora_alpha_is_honoured_exactly():
    import numpy as np
    from keras import ops

    from runner import model

    cfg = compose("lora.rank=4", "lora.alpha=8", "lora.targets=[query]")
    causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, cfg.train.precision)
    layers = [l for l in causal_lm.backbone._flatten_layers() if getattr(l, "lora_enabled", 0)]
    assert {l.name for l in layers} == {"query"} and len(layers) == 4
    layer = layers[0]
    layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape, "float32"))
    a, b = ops.convert_to_numpy(layer.lora_kernel_a), ops.convert_to_numpy(layer.lora_kernel_b)
    expected = ops.convert_to_numpy(layer._kernel) + (8 / 4) * np.einsum("hdr,rk->hdk", a, b)
    assert np.allclose(ops.convert_to_numpy(layer.kernel), expected, atol=1e-6)


def test_sampling_never_asks_the_tokenizer_for_ids_it_lacks():
    """model.weights=random over a larger vocabulary than the tokenizer's (the shipped tokenizer
    has 512 tokens, this architecture 4096 rows): without the limit, greedy sampling from random
    logits picks ids SentencePiece cannot detokenize ("piece id is out of range")."""
    import keras
    import keras_hub
    import numpy as np
    from omegaconf import OmegaConf

    from runner import generation, model, objective

    keras.utils.set_random_seed(0)
    preprocessor = keras_hub.models.CausalLMPreprocessor.from_preset(
        str(model.SHIPPED_PRESETS / "tiny_gemma"))
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=4096, num_layers=1, num_query_heads=2, num_key_value_heads=1,
        hidden_dim=32, intermediate_dim=64, head_dim=16)
    causal_lm = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=preprocessor)
    assert generation.vocabulary_limit(causal_lm) == 512
    for sampler in ("greedy", "top_k", "top_p"):
        cfg = OmegaConf.create({"sampler": sampler, "top_k": 5, "top_p": 0.9, "temperature": 1.0})
        train = OmegaConf.create({"loss_tiles": "auto", "gradient_accumulation_steps": 1,
                                  "batch_size": 2, "sequence_length": 16})
        objective.compile_for_training(causal_lm, keras.optimizers.SGD(), cfg, train, 1, seed=0)
        texts = generation.generate(causal_lm, ["The film", "A"], max_length=16, batch_axis_size=1)
        assert len(texts) == 2 and all(t.startswith(p) for t, p in zip(texts, ["The film", "A"]))
        # the ids past the tokenizer's end get probability 0, even where their logits are highest
        logits = np.zeros((1, 4096), "float32")
        logits[0, 4000] = 50.0
        probabilities = np.asarray(causal_lm.sampler.compute_probabilities(logits))
        assert probabilities[0, 512:].max() == 0.0
        assert np.isclose(probabilities[0, :512].sum(), 1.0)
    same = keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)
    assert generation.vocabulary_limit(same) is None  # nothing to decode: nothing to limit


def test_all_linear_adapts_every_dense_layer_of_the_blocks_and_not_the_head():
    """lora.targets=[all-linear], as PEFT's target_modules="all-linear"."""
    from runner import model

    cfg = compose("lora.rank=4", "lora.targets=[all-linear]")
    lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, "float32")
    adapted = {layer.name for layer in lm.backbone._flatten_layers(include_self=False)
               if getattr(layer, "lora_enabled", False)}
    assert adapted == {"query", "key", "value", "attention_output", "ffw_gating",
                       "ffw_gating_2", "ffw_linear"}


def test_lora_dropout_drops_the_branch_input_in_training_only_and_reruns_alike():
    """PEFT's lora_dropout: base(x) + s * B(A(dropout(x))); the frozen path and inference are
    untouched; the masks come from the layer's seed generator, seeded by the run's seed."""
    import keras
    import numpy as np
    from keras import ops

    from runner import model

    def query_layer():
        keras.utils.set_random_seed(3)
        cfg = compose("lora.rank=4", "lora.targets=[query]", "lora.dropout=0.5")
        causal_lm = model.build_causal_lm(cfg.model, cfg.lora, cfg.quant, "float32")
        layer = causal_lm.backbone.get_layer("decoder_block_0").attention.query_dense
        layer.lora_kernel_b.assign(np.ones(layer.lora_kernel_b.shape, "float32"))
        return layer

    layer = query_layer()
    assert layer.lora_dropout_seed.state.path == \
        "decoder_block_0/attention/query/lora_dropout/seed_generator_state"
    x = np.random.default_rng(0).normal(size=(2, 5, 128)).astype("float32")
    kernel, a, b = (ops.convert_to_numpy(v) for v in (layer._kernel, layer.lora_kernel_a,
                                                      layer.lora_kernel_b))
    scale = layer.lora_alpha / layer.lora_rank

    def expected(inputs, branch_inputs):
        return np.einsum("btd,ndh->btnh", inputs, kernel) + scale * np.einsum(
            "btd,ndr,rh->btnh", branch_inputs, a, b)

    np.testing.assert_allclose(ops.convert_to_numpy(layer(x, training=False)), expected(x, x),
                               atol=1e-5)
    # the mask the layer draws next, drawn from a copy of its generator
    copy = keras.random.SeedGenerator(0)
    copy.state.assign(layer.lora_dropout_seed.state.value)
    dropped = ops.convert_to_numpy(keras.random.dropout(x, 0.5, seed=copy))
    assert 0.3 < np.mean(dropped == 0) < 0.7
    trained = ops.convert_to_numpy(layer(x, training=True))
    np.testing.assert_allclose(trained, expected(x, dropped), atol=1e-5)
    assert not np.allclose(ops.convert_to_numpy(layer(x, training=True)), trained)  # moved on
    # the same seed: the same masks, in the same order
    assert np.array_equal(ops.convert_to_numpy(query_layer()(x, training=True)), trained)

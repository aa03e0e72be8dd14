"""T5 (section 6.3): RMS norm, relative position bias, attention, blocks and the model, against keras-hub."""

import keras
import keras_hub
import numpy as np
import pytest
from keras_hub.src.models.t5.t5_layer_norm import T5LayerNorm
from keras_hub.src.models.t5.t5_multi_head_attention import T5MultiHeadAttention

from layers.generation import TextGenerator
from layers.normalization import RMSNormalization
from layers.t5 import T5, RelativePositionBias, T5Attention, T5Block, copy_t5_weights, relative_positions
from tests.layer_harness import run_layer_contract

VOCAB = 50
RNG = np.random.default_rng(0)
SOURCE = RNG.integers(1, VOCAB, (2, 9)).astype("int32")
TARGET = RNG.integers(1, VOCAB, (2, 7)).astype("int32")
SOURCE_MASK = np.array([[1] * 9, [1] * 6 + [0] * 3], "int32")
TARGET_MASK = np.array([[1] * 7, [1] * 5 + [0] * 2], "int32")
SMALL = dict(num_layers=2, hidden_dim=16, num_heads=2, intermediate_dim=32)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def _pair(gated=False, activation="relu", tie=True):
    backbone = keras_hub.models.T5Backbone(
        vocabulary_size=VOCAB, dropout=0.0, activation=activation, use_gated_activation=gated,
        tie_embedding_weights=tie, **SMALL,
    )
    ours = T5(VOCAB, 32, activation=activation, use_gated_activation=gated, tie_embeddings=tie, **SMALL)
    copy_t5_weights(backbone, ours)
    return ours, backbone


def _backbone_outputs(backbone):
    return backbone({
        "encoder_token_ids": SOURCE, "encoder_padding_mask": SOURCE_MASK,
        "decoder_token_ids": TARGET, "decoder_padding_mask": TARGET_MASK,
    })


# -- RMS layer norm ------------------------------------------------------------------------------


def test_rms_norm_contract_matches_keras_hub_t5_layer_norm_and_formula():
    x = RNG.normal(size=(2, 5, 8)).astype("float32") * 3
    gamma = RNG.normal(size=(8,)).astype("float32")
    theirs = T5LayerNorm(1e-6)
    theirs.build(x.shape)
    theirs.weight.assign(gamma)

    def make():
        layer = RMSNormalization()
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        return layer

    run_layer_contract(make, x, expected_output_shape=x.shape, reference=lambda v: to_np(theirs(v)))
    formula = gamma * x / np.sqrt(np.mean(x ** 2, axis=-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(to_np(make()(x)), formula, rtol=1e-5, atol=1e-6)
    # No mean subtraction: a constant shift changes the output (layer norm would not).
    assert not np.allclose(to_np(make()(x + 5.0)), to_np(make()(x)), atol=1e-3)


def test_rms_norm_keeps_float32_statistics_under_bfloat16_and_rejects_bad_input():
    layer = RMSNormalization(dtype="mixed_bfloat16")
    out = layer(np.full((1, 2, 4), 300.0, "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    np.testing.assert_allclose(to_np(keras.ops.cast(out, "float32")), 1.0, rtol=1e-2)
    with pytest.raises(ValueError, match="epsilon"):
        RMSNormalization(epsilon=0)
    with pytest.raises(ValueError, match="built for 4 features"):
        layer(np.ones((1, 2, 5), "float32"))


# -- relative position bias ----------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [True, False], ids=["encoder", "decoder"])
def test_relative_position_buckets_and_bias_equal_keras_hub(bidirectional):
    relative = np.arange(-300, 300, dtype="int32")[None, None, :]
    from layers.t5 import relative_position_bucket

    ours = to_np(relative_position_bucket(relative, bidirectional, 32, 128))
    theirs = to_np(T5MultiHeadAttention._relative_position_bucket(relative, bidirectional, 32, 128))
    np.testing.assert_array_equal(ours, theirs)
    # Exact buckets for small distances, one shared bucket far away.
    distance = np.abs(relative[0, 0])
    assert len(set(ours[0, 0][distance < 8].tolist())) == (15 if bidirectional else 8)
    assert ours[0, 0][relative[0, 0] <= -128].tolist() == [ours[0, 0, 0]] * int((relative[0, 0] <= -128).sum())

    hub = T5MultiHeadAttention(not bidirectional, 16, 8, 2, 0.0, use_relative_attention_bias=True)
    table = RNG.normal(size=(32, 2)).astype("float32")
    hub.relative_attention_bias.assign(table)

    def make():
        layer = RelativePositionBias(num_heads=2, bidirectional=bidirectional)
        layer.build()
        layer.embeddings.assign(table)
        return layer

    positions = to_np(relative_positions(5, 9, query_offset=3))
    run_layer_contract(
        make, positions, expected_output_shape=(1, 2, 5, 9),
        reference=lambda p: to_np(hub.compute_bias(5, 9, query_start_index=3)),
    )


def test_relative_position_bias_rejects_bad_settings():
    with pytest.raises(ValueError, match="max_distance"):
        RelativePositionBias(2, num_buckets=32, max_distance=4)
    with pytest.raises(ValueError, match="rank 3"):
        RelativePositionBias(2)(np.zeros((4, 4), "int32"))


# -- attention and blocks -------------------------------------------------------------------------


def test_t5_attention_contract_is_unscaled_softmax_plus_bias():
    x = RNG.normal(size=(2, 5, 8)).astype("float32")
    bias = RNG.normal(size=(1, 2, 5, 5)).astype("float32")

    def reference(layer, v):
        wq, wk, wv, wo = (to_np(w) for w in (layer.query_kernel, layer.key_kernel, layer.value_kernel,
                                              layer.output_kernel))
        heads = lambda m: m.reshape(2, 5, 2, 4).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, val = heads(v @ wq), heads(v @ wk), heads(v @ wv)
        scores = q @ k.transpose(0, 1, 3, 2) + bias  # no 1/sqrt(d_k)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        return (weights @ val).transpose(0, 2, 1, 3).reshape(2, 5, 8) @ wo

    run_layer_contract(
        lambda: T5Attention(num_heads=2, key_value_dim=4), x, expected_output_shape=(2, 5, 8),
        reference=reference, reference_uses_layer=True, call_kwargs={"attention_bias": bias},
    )


@pytest.mark.parametrize("is_decoder", [False, True], ids=["encoder", "decoder"])
def test_t5_block_contract_matches_keras_hub_layer(is_decoder):
    from keras_hub.src.models.t5.t5_transformer_layer import T5TransformerLayer

    x = RNG.normal(size=(2, 5, 16)).astype("float32")
    context = RNG.normal(size=(2, 6, 16)).astype("float32")
    hub = T5TransformerLayer(is_decoder, 16, 32, 8, 0.0, "gelu", 1e-6, 2, use_gated_activation=True,
                             use_relative_attention_bias=False)
    hub_out, _ = hub(x, encoder_hidden_states=context if is_decoder else None, use_causal_mask=is_decoder)

    def make():
        block = T5Block(32, 2, is_decoder=is_decoder, activation="gelu", use_gated_activation=True)
        block.build([x.shape, context.shape] if is_decoder else x.shape)
        names = [("self_attention", "self_attention_layer_norm", "self_attention_norm")]
        if is_decoder:
            names.append(("cross_attention", "cross_attention_layer_norm", "cross_attention_norm"))
        for name, their_norm, our_norm in names:
            for part in ("query", "key", "value", "output"):
                getattr(getattr(block, name), f"{part}_kernel").assign(getattr(getattr(hub, name), f"{part}_projector").kernel)
            getattr(block, our_norm).gamma.assign(getattr(hub, their_norm).weight)
        block.input_kernel.assign(hub.input_projector.kernel)
        block.gate_kernel.assign(hub.gate_projector.kernel)
        block.output_kernel.assign(hub.output_projector.kernel)
        block.feedforward_norm.gamma.assign(hub.layer_norm.weight)
        return block

    causal = np.where(np.tril(np.ones((5, 5), bool)), 0.0, -1e9).astype("float32")[None, None]
    run_layer_contract(
        make, [x, context] if is_decoder else x, expected_output_shape=(2, 5, 16),
        reference=lambda *args: to_np(hub_out), call_kwargs={"attention_bias": causal} if is_decoder else {},
    )


# -- the model ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gated,activation,tie", [(False, "relu", True), (True, "gelu", False)], ids=["t5_v1_0", "t5_v1_1_gated_gelu"]
)
def test_t5_encoder_and_decoder_outputs_equal_keras_hub_t5_backbone(gated, activation, tie):
    ours, backbone = _pair(gated, activation, tie)
    expected = _backbone_outputs(backbone)
    encoded = ours.encode(SOURCE, SOURCE_MASK.astype(bool))
    np.testing.assert_allclose(to_np(encoded[0]), to_np(expected["encoder_sequence_output"]), atol=1e-5)
    decoded = ours.decode_sequence(TARGET, encoded, TARGET_MASK.astype(bool))
    np.testing.assert_allclose(to_np(decoded), to_np(expected["decoder_sequence_output"]), atol=1e-5)
    # Logits: keras-hub's Seq2SeqLM head (scaled, tied) on its decoder output.
    lm = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)
    np.testing.assert_allclose(
        to_np(ours.decode(TARGET, encoded, TARGET_MASK.astype(bool))),
        to_np(lm._logits(expected["decoder_sequence_output"])), atol=1e-5,
    )


def test_t5_model_contract_with_keras_hub_logits_reference():
    ours, backbone = _pair()
    lm = keras_hub.models.T5Seq2SeqLM(backbone=backbone, preprocessor=None)

    def make():
        clone = T5(VOCAB, 32, **SMALL)
        clone.build()
        clone.set_weights(ours.get_weights())
        return clone

    def reference(src, tgt):
        out = backbone({"encoder_token_ids": src, "encoder_padding_mask": np.ones_like(src),
                        "decoder_token_ids": tgt, "decoder_padding_mask": np.ones_like(tgt)})
        return to_np(lm._logits(out["decoder_sequence_output"]))

    run_layer_contract(make, [SOURCE, TARGET], expected_output_shape=(2, 7, VOCAB), reference=reference, atol=1e-5)


def test_t5_relative_bias_is_one_table_per_stack_shared_by_every_layer():
    ours, _ = _pair()
    tables = [w for w in ours.weights if "position_bias" in w.path]
    assert len(tables) == 2 and all(tuple(w.shape) == (32, 2) for w in tables)
    # A layer's own weights hold no bias table (keras-hub keeps one in layer 0 only).
    for layer in ours.encoder_layers + ours.decoder_layers:
        assert not any("position_bias" in w.path or "embeddings" in w.path for w in layer.weights)


def test_t5_cache_equals_full_forward_and_greedy_generation_agrees_without_cache():
    ours, _ = _pair(gated=True, activation="gelu")
    encoded = ours.encode(SOURCE, SOURCE_MASK.astype(bool))
    full = to_np(ours.decode(TARGET, encoded))
    cache = ours.build_cache(2, 12, encoded)
    logits, cache = ours.call_with_cache(TARGET[:, :3], cache, 0)
    steps = [to_np(logits)]
    for i in range(3, TARGET.shape[1]):
        logits, cache = ours.call_with_cache(TARGET[:, i:i + 1], cache, i)
        steps.append(to_np(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)

    inputs = {"encoder_inputs": SOURCE, "encoder_padding_mask": SOURCE_MASK.astype(bool)}
    prompt = np.ones((2, 1), "int32")
    cached = TextGenerator(ours, max_new_tokens=8, cache_length=16, jit_compile=False)(prompt, encoder_inputs=inputs)
    uncached = TextGenerator(ours, max_new_tokens=8, cache_length=16, use_cache=False, jit_compile=False)(
        prompt, encoder_inputs=inputs)
    np.testing.assert_array_equal(cached["token_ids"], uncached["token_ids"])
    beams = TextGenerator(ours, sampler="beam", max_new_tokens=8, cache_length=16, jit_compile=False)(
        prompt, encoder_inputs=inputs, num_beams=3)
    assert beams["token_ids"].shape[0] == 2


def test_t5_overfits_a_tiny_batch_under_bfloat16():
    keras.utils.set_random_seed(0)
    model = T5(VOCAB, 16, dtype="mixed_bfloat16", **SMALL)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = {"encoder_inputs": SOURCE, "decoder_token_ids": TARGET[:, :-1]}
    history = model.fit(x, TARGET[:, 1:], epochs=100, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]


def test_t5_rejects_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="divisible"):
        T5(VOCAB, 16, hidden_dim=10, num_heads=3)
    with pytest.raises(ValueError, match="activation"):
        T5Block(8, 2, activation="elu")
    model = T5(VOCAB, 16, **SMALL)
    with pytest.raises(ValueError, match="rank 2"):
        model([SOURCE[0], TARGET])
    with pytest.raises(ValueError, match="missing"):
        model({"encoder_inputs": SOURCE})
    with pytest.raises(ValueError, match="encoder_outputs"):
        model.build_cache(2, 8)
    with pytest.raises(ValueError, match="cross_attention_cache"):
        model.decoder_layers[0](np.ones((1, 2, 16), "float32"))

import keras
import keras_hub
import numpy as np
import pytest

from layers.transformer import PositionwiseFeedForward, TransformerDecoderLayer, TransformerEncoderLayer
from tests.layer_harness import run_layer_contract, seeded_array

B, T, S, D, HEADS, FF = 2, 5, 6, 16, 4, 24
DEC = seeded_array(B, T, D, seed=1)
ENC = seeded_array(B, S, D, seed=2)
DEC_PAD = np.array([[True] * T, [True] * (T - 1) + [False]])
ENC_PAD = np.array([[True] * S, [True] * (S - 2) + [False] * 2])


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def np_ffn(x, w1, b1, w2, b2, activation=lambda h: np.maximum(0.0, h)):
    """Section 5.4: FFN(x) = max(0, x W1 + b1) W2 + b2."""
    return activation(x @ w1 + b1) @ w2 + b2


def _ffn_weights(layer):
    return [to_np(w) for w in (
        layer.intermediate_dense.kernel, layer.intermediate_dense.bias,
        layer.output_dense.kernel, layer.output_dense.bias,
    )]


def test_feedforward_contract_against_textbook_formula():
    run_layer_contract(
        lambda: PositionwiseFeedForward(FF, bias_initializer="random_normal"),
        DEC,
        expected_output_shape=DEC.shape,
        reference=lambda layer, x: np_ffn(x, *_ffn_weights(layer)),
        reference_uses_layer=True,
    )


def test_feedforward_activation_is_configurable():
    layer = PositionwiseFeedForward(FF, activation="gelu")
    out = to_np(layer(DEC))
    gelu = lambda h: 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))  # noqa: E731
    np.testing.assert_allclose(out, np_ffn(DEC, *_ffn_weights(layer), activation=gelu), atol=1e-5)
    from scipy.special import erf

    exact = PositionwiseFeedForward(FF, activation="gelu_exact")  # the original BERT's x * Phi(x)
    out = to_np(exact(DEC))
    gelu = lambda h: 0.5 * h * (1 + erf(h / np.sqrt(2)))  # noqa: E731
    np.testing.assert_allclose(out, np_ffn(DEC, *_ffn_weights(exact), activation=gelu), atol=1e-5)


# --- keras_hub parity, weights copied sub-layer by sub-layer --------------------------------


def _copy(src, dst):
    dst.set_weights(src.get_weights())


def _copy_from_keras_hub(theirs, ours):
    _copy(theirs._self_attention_layer, ours.self_attention)
    _copy(theirs._self_attention_layer_norm, ours.self_attention_layer_norm)
    if getattr(theirs, "_cross_attention_layer", None) is not None:
        _copy(theirs._cross_attention_layer, ours.cross_attention)
        _copy(theirs._cross_attention_layer_norm, ours.cross_attention_layer_norm)
    _copy(theirs._feedforward_intermediate_dense, ours.feedforward.intermediate_dense)
    _copy(theirs._feedforward_output_dense, ours.feedforward.output_dense)
    _copy(theirs._feedforward_layer_norm, ours.feedforward_layer_norm)


def _keras_hub_encoder(normalize_first, shape):
    theirs = keras_hub.layers.TransformerEncoder(
        FF, HEADS, normalize_first=normalize_first, bias_initializer="random_normal"
    )
    theirs.build(shape)
    return theirs


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_encoder_layer_contract_and_keras_hub_parity(normalize_first):
    theirs = _keras_hub_encoder(normalize_first, ENC.shape)

    def make():
        layer = TransformerEncoderLayer(FF, HEADS, normalize_first=normalize_first)
        layer.build(ENC.shape)
        _copy_from_keras_hub(theirs, layer)
        return layer

    run_layer_contract(make, ENC, expected_output_shape=ENC.shape, reference=lambda x: to_np(theirs(x)))


def test_encoder_layer_padding_mask_matches_keras_hub():
    theirs = _keras_hub_encoder(False, ENC.shape)
    ours = TransformerEncoderLayer(FF, HEADS)
    ours.build(ENC.shape)
    _copy_from_keras_hub(theirs, ours)
    np.testing.assert_allclose(
        to_np(ours(ENC, padding_mask=ENC_PAD)), to_np(theirs(ENC, padding_mask=ENC_PAD)), atol=1e-5
    )


def _decoder_pair(normalize_first, cross=True):
    theirs = keras_hub.layers.TransformerDecoder(
        FF, HEADS, normalize_first=normalize_first, bias_initializer="random_normal"
    )
    theirs.build(DEC.shape, ENC.shape if cross else None)
    ours = TransformerDecoderLayer(FF, HEADS, normalize_first=normalize_first)
    ours.build([DEC.shape, ENC.shape] if cross else DEC.shape)
    _copy_from_keras_hub(theirs, ours)
    return ours, theirs


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_decoder_layer_with_cross_attention_contract_and_keras_hub_parity(normalize_first):
    ours, theirs = _decoder_pair(normalize_first)

    def make():
        layer = TransformerDecoderLayer(FF, HEADS, normalize_first=normalize_first)
        layer.build([DEC.shape, ENC.shape])
        layer.set_weights(ours.get_weights())
        return layer

    run_layer_contract(
        make,
        [DEC, ENC],
        expected_output_shape=DEC.shape,
        reference=lambda dec, enc: to_np(theirs(dec, enc)),
    )
    # Masked: decoder padding, encoder padding and the causal mask together.
    np.testing.assert_allclose(
        to_np(ours([DEC, ENC], decoder_padding_mask=DEC_PAD, encoder_padding_mask=ENC_PAD)),
        to_np(theirs(DEC, ENC, decoder_padding_mask=DEC_PAD, encoder_padding_mask=ENC_PAD)),
        atol=1e-5,
    )


def test_decoder_only_layer_matches_keras_hub_decoder_without_encoder():
    ours, theirs = _decoder_pair(True, cross=False)
    np.testing.assert_allclose(
        to_np(ours(DEC, decoder_padding_mask=DEC_PAD)),
        to_np(theirs(DEC, decoder_padding_mask=DEC_PAD)),
        atol=1e-5,
    )


def test_decoder_layer_is_causal():
    ours, _ = _decoder_pair(False)
    changed = DEC.copy()
    changed[:, 3:] += 1.0  # changing the future must not change positions 0..2
    np.testing.assert_allclose(
        to_np(ours([changed, ENC]))[:, :3], to_np(ours([DEC, ENC]))[:, :3], atol=1e-6
    )


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_ln", "pre_ln"])
def test_decoder_layer_kv_cache_equals_full_pass(normalize_first):
    ours, _ = _decoder_pair(normalize_first)
    full = to_np(ours([DEC, ENC], encoder_padding_mask=ENC_PAD))
    cross = ours.cross_attention.compute_key_value(ENC)
    cache = ours.self_attention.empty_cache(B, cache_length=8)
    steps = []
    for i in range(T):
        out, cache = ours(
            DEC[:, i : i + 1], encoder_padding_mask=ENC_PAD, self_attention_cache=cache, cache_index=i,
            cross_attention_cache=cross,
        )
        steps.append(to_np(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


# --- errors -------------------------------------------------------------------------------


def test_mismatched_head_sizes_are_rejected():
    with pytest.raises(ValueError, match="not divisible by num_heads=4.*mismatched head sizes"):
        TransformerEncoderLayer(FF, num_heads=4)(seeded_array(B, T, 18))


def test_transformer_layers_reject_bad_arguments_and_inputs():
    with pytest.raises(ValueError, match="activation must be one of"):
        TransformerEncoderLayer(FF, HEADS, activation="softplus")
    with pytest.raises(ValueError, match=r"expected inputs of rank 3 \(batch, time, d_model\), got shape \(2, 16\)"):
        TransformerEncoderLayer(FF, HEADS)(np.ones((2, 16), "float32"))
    ours, _ = _decoder_pair(False)
    with pytest.raises(ValueError, match="built with cross-attention"):
        ours(DEC)
    with pytest.raises(ValueError, match="both self_attention_cache and cache_index"):
        ours([DEC, ENC], cache_index=0)


def test_output_kernel_initializer_reaches_the_residual_projections_only():
    layer = TransformerDecoderLayer(FF, HEADS, output_kernel_initializer="zeros")
    layer.build((None, None, D))
    assert not np.any(to_np(layer.self_attention.output_kernel))
    assert not np.any(to_np(layer.feedforward.output_dense.kernel))
    assert np.any(to_np(layer.self_attention.query_kernel)) and np.any(to_np(layer.feedforward.intermediate_dense.kernel))
    ffn = PositionwiseFeedForward(FF)
    ffn.build((None, None, D))  # W_1 (D, FF) and W_2 (FF, D) draw apart (one shared instance gave equal values)
    assert not np.array_equal(to_np(ffn.intermediate_dense.kernel).ravel(), to_np(ffn.output_dense.kernel).ravel())
    assert TransformerDecoderLayer.from_config(layer.get_config()).get_config() == layer.get_config()

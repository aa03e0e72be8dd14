import keras
import numpy as np
import pytest

from layers.attention import (
    Attention,
    MultiHeadAttention,
    ScaledDotProductAttention,
    SelfAttention,
    causal_mask,
    compute_attention_mask,
)
from tests.layer_harness import run_layer_contract, seeded_array

B, T, S, D = 2, 4, 5, 8
H_T = seeded_array(B, T, D, seed=1)
H_S = seeded_array(B, S, D, seed=2)
# Second batch row has two padding steps at the end.
PAD = np.array([[True] * S, [True] * (S - 2) + [False] * 2])


def np_softmax(x, mask=None):
    if mask is not None:
        x = np.where(mask, x, -np.inf)
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def np_attend(scores, h_s, mask=None):
    """Section 4.2: alpha = softmax_s e(t, s), c(t) = sum_s alpha(t, s) h_s."""
    alpha = np_softmax(scores, mask)
    return alpha @ h_s, alpha


def np_causal(t, s, offset=0):
    return np.arange(s)[None, :] <= (np.arange(t)[:, None] + offset)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


# --- 4.2 score functions ---------------------------------------------------------------


def test_dot_attention_contract_formula_and_keras_attention():
    report = run_layer_contract(
        lambda: Attention(score="dot"),
        [H_T, H_S],
        expected_output_shape=[(B, T, D), (B, T, S)],
        reference=lambda h_t, h_s: np_attend(h_t @ h_s.transpose(0, 2, 1), h_s),
    )
    keras_out, keras_w = keras.layers.Attention(use_scale=False)(
        [H_T, H_S], return_attention_scores=True
    )
    np.testing.assert_allclose(report.outputs[0], to_np(keras_out), atol=1e-5)
    np.testing.assert_allclose(report.outputs[1], to_np(keras_w), atol=1e-5)


def test_dot_attention_padding_mask_matches_keras_attention():
    context, weights = Attention(score="dot")([H_T, H_S], padding_mask=PAD)
    keras_out, keras_w = keras.layers.Attention(use_scale=False)(
        [H_T, H_S], mask=[None, PAD], return_attention_scores=True
    )
    np.testing.assert_allclose(to_np(context), to_np(keras_out), atol=1e-5)
    np.testing.assert_allclose(to_np(weights), to_np(keras_w), atol=1e-5)
    assert np.all(to_np(weights)[1, :, S - 2 :] == 0.0)


def test_general_attention_contract_against_formula():
    h_s = seeded_array(B, S, 6, seed=3)  # general allows d_s != d_t

    def reference(layer, h_t, h_s):
        w_a = to_np(layer.w_a)
        return np_attend(np.einsum("btd,de,bse->bts", h_t, w_a, h_s), h_s)

    run_layer_contract(
        lambda: Attention(score="general"),
        [H_T, h_s],
        expected_output_shape=[(B, T, 6), (B, T, S)],
        reference=reference,
        reference_uses_layer=True,
    )


def test_additive_attention_contract_against_formula():
    def reference(layer, h_t, h_s):
        w_a, v_a = to_np(layer.w_a), to_np(layer.v_a)
        pairs = np.concatenate(  # [h_t; h_s] for every (t, s)
            [np.repeat(h_t[:, :, None], S, 2), np.repeat(h_s[:, None], T, 1)], axis=-1
        )
        return np_attend(np.tanh(pairs @ w_a) @ v_a, h_s)

    run_layer_contract(
        lambda: Attention(score="additive", units=7),
        [H_T, H_S],
        expected_output_shape=[(B, T, D), (B, T, S)],
        reference=reference,
        reference_uses_layer=True,
    )


def test_additive_attention_matches_keras_additive_attention():
    # Keras's AdditiveAttention is sum(scale * tanh(q + k)): ours with W_a = [I; I], v_a = scale.
    theirs = keras.layers.AdditiveAttention(use_scale=True)
    keras_out, keras_w = theirs([H_T, H_S], mask=[None, PAD], return_attention_scores=True)
    ours = Attention(score="additive")
    ours([H_T, H_S])
    ours.w_a.assign(np.concatenate([np.eye(D), np.eye(D)]).astype("float32"))
    ours.v_a.assign(np.random.default_rng(0).standard_normal(D).astype("float32"))
    theirs.scale.assign(to_np(ours.v_a))
    keras_out, keras_w = theirs([H_T, H_S], mask=[None, PAD], return_attention_scores=True)
    context, weights = ours([H_T, H_S], padding_mask=PAD)
    np.testing.assert_allclose(to_np(context), to_np(keras_out), atol=1e-5)
    np.testing.assert_allclose(to_np(weights), to_np(keras_w), atol=1e-5)


# --- masks ------------------------------------------------------------------------------


def test_causal_mask_hides_future_positions():
    np.testing.assert_array_equal(to_np(causal_mask(3, 3)), np.tril(np.ones((3, 3), bool)))
    # One query at cache position 2 of a 5-long cache sees keys 0..2.
    np.testing.assert_array_equal(to_np(causal_mask(1, 5, 2)), [[True, True, True, False, False]])


def test_padding_and_causal_masks_are_merged():
    mask = to_np(compute_attention_mask(B, S, S, padding_mask=PAD, use_causal_mask=True))
    np.testing.assert_array_equal(mask, PAD[:, None, :] & np_causal(S, S)[None])


# --- 4.3 scaled dot-product and self-attention --------------------------------------------


def test_scaled_dot_product_attention_contract_with_causal_and_padding_masks():
    q = seeded_array(B, S, 6, seed=4)
    k = seeded_array(B, S, 6, seed=5)
    v = seeded_array(B, S, 3, seed=6)
    mask = PAD[:, None, :] & np_causal(S, S)[None]
    run_layer_contract(
        ScaledDotProductAttention,
        [q, k, v],
        expected_output_shape=(B, S, 3),
        reference=lambda q, k, v: np_softmax(q @ k.transpose(0, 2, 1) / np.sqrt(6), mask) @ v,
        call_kwargs={"padding_mask": PAD, "use_causal_mask": True},
        check_keras_file=False,  # a constant mask in call kwargs is not serializable
        check_saved_model=False,
    )


def test_self_attention_contract_against_formula():
    def reference(layer, x):
        q, k, v = (x @ to_np(w) for w in (layer.w_q, layer.w_k, layer.w_v))
        return np_softmax(q @ k.transpose(0, 2, 1) / np.sqrt(4), np_causal(T, T)) @ v

    run_layer_contract(
        lambda: SelfAttention(key_dim=4, value_dim=3),
        H_T,
        expected_output_shape=(B, T, 3),
        reference=reference,
        reference_uses_layer=True,
        call_kwargs={"use_causal_mask": True},
    )


# --- 4.4 multi-head attention -------------------------------------------------------------


def _pair(num_heads=2, key_dim=3, value_dim=None, output_dim=None, query_shape=(B, T, D), value_shape=None):
    """Our MHA and Keras's with the same (copied) weights."""
    value_shape = value_shape or query_shape
    theirs = keras.layers.MultiHeadAttention(
        num_heads, key_dim, value_dim=value_dim, output_shape=output_dim, bias_initializer="random_normal"
    )
    theirs.build(query_shape, value_shape)
    ours = MultiHeadAttention(num_heads, key_dim, value_dim=value_dim, output_dim=output_dim)
    ours.build([query_shape, value_shape])
    ours.set_weights(theirs.get_weights())
    return ours, theirs


def test_multi_head_attention_contract_against_keras():
    def reference(layer, q, v):
        theirs = keras.layers.MultiHeadAttention(2, 3, value_dim=5)
        theirs.build(q.shape, v.shape)
        theirs.set_weights(layer.get_weights())
        return to_np(theirs(q, v))

    run_layer_contract(
        lambda: MultiHeadAttention(num_heads=2, key_dim=3, value_dim=5, bias_initializer="random_normal"),
        [H_T, H_S],
        expected_output_shape=(B, T, D),
        reference=reference,
        reference_uses_layer=True,
    )


def test_multi_head_attention_self_attention_causal_and_padding_match_keras():
    x = seeded_array(B, S, D, seed=7)
    ours, theirs = _pair(query_shape=(B, S, D))
    out, w = ours(x, padding_mask=PAD, use_causal_mask=True, return_attention_scores=True)
    ref, ref_w = theirs(x, x, value_mask=PAD, use_causal_mask=True, return_attention_scores=True)
    np.testing.assert_allclose(to_np(out), to_np(ref), atol=1e-5)
    np.testing.assert_allclose(to_np(w), to_np(ref_w), atol=1e-5)


def test_multi_head_attention_cross_attention_masks_match_keras():
    ours, theirs = _pair(num_heads=4, key_dim=2, value_dim=3, output_dim=6, value_shape=(B, S, D))
    explicit = np.random.default_rng(1).random((B, T, S)) > 0.3
    explicit[:, :, 0] = True  # every query sees at least one key
    out = ours([H_T, H_S], padding_mask=PAD, attention_mask=explicit)
    ref = theirs(H_T, H_S, attention_mask=explicit & PAD[:, None, :])
    assert out.shape == (B, T, 6)
    np.testing.assert_allclose(to_np(out), to_np(ref), atol=1e-5)
    # Unmasked too.
    np.testing.assert_allclose(to_np(ours([H_T, H_S])), to_np(theirs(H_T, H_S)), atol=1e-5)


def test_multi_head_attention_separate_key_input_matches_keras():
    key = seeded_array(B, S, 5, seed=8)
    theirs = keras.layers.MultiHeadAttention(2, 3, bias_initializer="random_normal")
    theirs.build((B, T, D), (B, S, D), (B, S, 5))
    ours = MultiHeadAttention(2, 3)
    ours.build([(B, T, D), (B, S, D), (B, S, 5)])
    ours.set_weights(theirs.get_weights())
    np.testing.assert_allclose(
        to_np(ours([H_T, H_S, key])), to_np(theirs(H_T, H_S, key)), atol=1e-5
    )


def test_multi_head_attention_cache_decoding_equals_full_causal_pass():
    x = seeded_array(B, S, D, seed=9)
    mha = MultiHeadAttention(num_heads=2, key_dim=4)
    full = to_np(mha(x, use_causal_mask=True))
    cache = mha.empty_cache(B, cache_length=S + 2)  # longer than needed: the tail stays masked
    # Prefill two positions at once, then one token per step.
    out, cache = mha(x[:, :2], cache=cache, cache_index=0, use_causal_mask=True)
    steps = [to_np(out)]
    for i in range(2, S):
        out, cache = mha(x[:, i : i + 1], cache=cache, cache_index=i, use_causal_mask=True)
        steps.append(to_np(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_multi_head_attention_precomputed_cross_cache_equals_direct_call():
    ours = MultiHeadAttention(num_heads=2, key_dim=4)
    direct = to_np(ours([H_T, H_S], padding_mask=PAD))
    cache = ours.compute_key_value(H_S)
    out, _ = ours([H_T, H_S], padding_mask=PAD, cache=cache)
    np.testing.assert_allclose(to_np(out), direct, atol=1e-6)


# --- errors -------------------------------------------------------------------------------


def test_attention_rejects_unknown_score_and_size_mismatch():
    with pytest.raises(ValueError, match="Attention score must be one of"):
        Attention(score="cosine")
    with pytest.raises(ValueError, match="same size"):
        Attention(score="dot")([H_T, seeded_array(B, S, 6)])


def test_attention_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"expected inputs of rank 3 \(batch, time, features\), got shape \(4, 7\)"):
        MultiHeadAttention(2, 4)(np.ones((4, 7), "float32"))
    with pytest.raises(ValueError, match="rank 3"):
        Attention()([np.ones((2, 8), "float32"), H_S])


def test_masks_of_wrong_shape_are_rejected():
    mha = MultiHeadAttention(2, 4)
    with pytest.raises(ValueError, match=r"padding_mask must have shape \(batch, key_length\)"):
        mha([H_T, H_S], padding_mask=np.ones((B, S + 1), bool))
    with pytest.raises(ValueError, match=r"attention_mask must have shape \(batch, query_length, key_length\)"):
        mha([H_T, H_S], attention_mask=np.ones((B, S, T), bool))
    with pytest.raises(ValueError, match="padding_mask must have shape"):
        Attention()([H_T, H_S], padding_mask=np.ones((B, 1, S), bool))


def test_mismatched_head_sizes_in_cache_are_rejected():
    mha = MultiHeadAttention(num_heads=2, key_dim=4)
    mha(H_T)
    bad = (np.zeros((B, 4, 6, 2), "float32"), np.zeros((B, 4, 6, 2), "float32"))
    with pytest.raises(ValueError, match="mismatched head sizes"):
        mha(H_T[:, :1], cache=bad, cache_index=0)


def test_multi_head_attention_rejects_bad_arguments():
    with pytest.raises(ValueError, match="num_heads must be a positive integer"):
        MultiHeadAttention(num_heads=0, key_dim=4)
    with pytest.raises(ValueError, match="cache_index needs a cache"):
        MultiHeadAttention(2, 4)(H_T, cache_index=0)


def test_multi_head_attention_kernels_start_different_and_output_initializer_applies():
    # One unseeded initializer instance repeats its values; each kernel must draw its own.
    mha = MultiHeadAttention(2, 4, output_kernel_initializer=keras.initializers.Zeros())
    mha.build((None, None, D))
    q, k, v = (keras.ops.convert_to_numpy(w) for w in (mha.query_kernel, mha.key_kernel, mha.value_kernel))
    assert not (np.array_equal(q, k) or np.array_equal(q, v) or np.array_equal(k, v))
    assert not np.any(keras.ops.convert_to_numpy(mha.output_kernel))
    clone = MultiHeadAttention.from_config(mha.get_config())
    assert clone.get_config() == mha.get_config()
    assert MultiHeadAttention(2, 4).get_config()["output_kernel_initializer"] is None

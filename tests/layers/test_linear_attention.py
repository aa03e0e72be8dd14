"""Linear attention (section 7.1): Performer's approximation of softmax attention improves with the number
of random features; its causal prefix-sum form equals the step-by-step recurrence; Linformer equals its
formula; both pass the layer contract."""

import numpy as np
import pytest
from keras import ops

from layers.attention import scaled_dot_product_attention
from layers.linear_attention import (
    LinformerAttention, PerformerAttention, _features, causal_performer_recurrence, favor_attention,
    orthogonal_random_features,
)
from tests.layer_harness import run_layer_contract

RNG = np.random.default_rng(0)


def _qkv(n=24, depth=8):
    return [(0.5 * RNG.normal(size=(2, 2, n, depth))).astype("float32") for _ in range(3)]


def test_orthogonal_features_are_orthogonal_within_a_block():
    w = orthogonal_random_features(8, 8, seed=1)
    gram = w @ w.T
    np.testing.assert_allclose(gram - np.diag(np.diag(gram)), 0.0, atol=1e-4)
    assert orthogonal_random_features(20, 8).shape == (20, 8)


def test_performer_error_against_softmax_attention_falls_as_features_grow():
    q, k, v = _qkv()
    exact = ops.convert_to_numpy(scaled_dot_product_attention(q, k, v)[0])
    errors = []
    for m in (8, 64, 512):
        runs = [np.abs(ops.convert_to_numpy(favor_attention(q, k, v, orthogonal_random_features(m, 8, seed))) - exact).mean()
                for seed in range(5)]
        errors.append(float(np.mean(runs)))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.35 * errors[0], errors


def test_causal_performer_equals_its_recurrence_and_sees_only_the_past():
    q, k, v = _qkv(n=10)
    projection = orthogonal_random_features(32, 8, seed=2)
    parallel = ops.convert_to_numpy(favor_attention(q, k, v, projection, causal=True))
    np.testing.assert_allclose(parallel, causal_performer_recurrence(q, k, v, projection), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(parallel[:, :, 0], v[:, :, 0], atol=1e-5)  # the first token attends to itself only
    changed, later_keys = v.copy(), k.copy()
    changed[:, :, 6:] += 5.0  # the future (values, and keys through the features' shift): no effect on 0-5
    later_keys[:, :, 6:] *= 3.0
    again = ops.convert_to_numpy(favor_attention(q, later_keys, changed, projection, causal=True))
    np.testing.assert_allclose(again[:, :, :6], parallel[:, :, :6], atol=1e-6, rtol=1e-6)


def _heads(t, n):
    return np.transpose(t.reshape(2, n, 2, 8), (0, 2, 1, 3))


def _merge(t, n):
    return np.transpose(t, (0, 2, 1, 3)).reshape(2, n, 16)


def test_performer_layer_contract_against_the_explicit_kernel_matrix():
    x = RNG.normal(size=(2, 11, 16)).astype("float32")

    def reference(layer, x):
        q, k, v = (_heads(ops.convert_to_numpy(d(x)), 11) for d in (layer.query_dense, layer.key_dense, layer.value_dense))
        scale = 8 ** -0.25
        phi_q = ops.convert_to_numpy(_features(q * scale, layer.projection, True))
        phi_k = ops.convert_to_numpy(_features(k * scale, layer.projection, False))
        kernel = np.einsum("bhqm,bhkm->bhqk", phi_q, phi_k)  # the n x n matrix FAVOR+ never forms
        return layer.output_dense(_merge((kernel / kernel.sum(-1, keepdims=True)) @ v, 11))

    run_layer_contract(lambda: PerformerAttention(2, 8, num_features=16, seed=4), x, expected_output_shape=(2, 11, 16),
                       reference=reference, reference_uses_layer=True, atol=1e-4, rtol=1e-4)


def test_linformer_layer_contract_against_its_formula():
    x = RNG.normal(size=(2, 12, 16)).astype("float32")

    def reference(layer, x):
        q, k, v = (_heads(ops.convert_to_numpy(d(x)), 12) for d in (layer.query_dense, layer.key_dense, layer.value_dense))
        e, f = (ops.convert_to_numpy(w)[:, :12] for w in (layer.key_projection, layer.value_projection))
        scores = np.einsum("bhqd,bhkd->bhqk", q, np.einsum("kn,bhnd->bhkd", e, k)) / np.sqrt(8)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        return layer.output_dense(_merge(weights @ np.einsum("kn,bhnd->bhkd", f, v), 12))

    run_layer_contract(lambda: LinformerAttention(2, 8, max_length=16, projected_length=4), x,
                       expected_output_shape=(2, 12, 16), reference=reference, reference_uses_layer=True, atol=1e-4)


def test_linformer_refuses_inputs_longer_than_its_projections():
    layer = LinformerAttention(2, 8, max_length=8, projected_length=4)
    with pytest.raises(ValueError, match="at most max_length=8"):
        layer(np.zeros((1, 9, 16), "float32"))

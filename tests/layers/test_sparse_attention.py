"""Longformer attention (section 7.1): the blockwise computation equals dense attention under the same
pattern, equals full attention when the window covers the sequence, and passes the layer contract."""

import numpy as np
import pytest
from keras import ops

from layers.attention import scaled_dot_product_attention
from layers.sparse_attention import LongformerSelfAttention, longformer_mask, sliding_window_attention
from tests.layer_harness import run_layer_contract

RNG = np.random.default_rng(0)


def _qkv(batch, heads, n, depth):
    return [RNG.normal(size=(batch, heads, n, depth)).astype("float32") for _ in range(3)]


def _dense(q, k, v, mask):
    return ops.convert_to_numpy(scaled_dot_product_attention(q, k, v, mask=mask)[0])


@pytest.mark.parametrize("n, window, num_global", [(16, 4, 0), (19, 4, 1), (23, 3, 2), (7, 2, 3), (5, 8, 0)])
def test_blockwise_equals_dense_attention_with_the_longformer_mask(n, window, num_global):
    q, k, v = _qkv(2, 3, n, 8)
    lengths = np.array([n, max(num_global + 1, n - 4)])
    padding = np.arange(n)[None] < lengths[:, None]
    mask = longformer_mask(n, window, num_global)[None, None] & padding[:, None, None, :]
    expected = _dense(q, k, v, mask)
    got = ops.convert_to_numpy(sliding_window_attention(q, k, v, window, num_global, padding))
    for row, length in enumerate(lengths):  # padded queries are don't-cares
        np.testing.assert_allclose(got[row, :, :length], expected[row, :, :length], atol=1e-5)


def test_a_window_covering_the_sequence_is_full_attention():
    q, k, v = _qkv(1, 2, 12, 4)
    full = _dense(q, k, v, None)
    np.testing.assert_allclose(ops.convert_to_numpy(sliding_window_attention(q, k, v, 12)), full, atol=1e-5)
    assert longformer_mask(12, 12).all()


def test_the_pattern_is_the_window_plus_global_rows_and_columns():
    mask = longformer_mask(6, 1, 1)
    assert mask[0].all() and mask[:, 0].all()
    assert mask[3].tolist() == [True, False, True, True, True, False]


def test_layer_contract_against_dense_attention_with_its_own_weights():
    x = RNG.normal(size=(2, 13, 16)).astype("float32")

    def reference(layer, x):
        def heads(t):
            return np.transpose(t.reshape(2, 13, 2, 8), (0, 2, 1, 3))

        q, k, v = (heads(ops.convert_to_numpy(d(x))) for d in (layer.query_dense, layer.key_dense, layer.value_dense))
        out = _dense(q, k, v, longformer_mask(13, 3, 1)[None, None])
        return layer.output_dense(np.transpose(out, (0, 2, 1, 3)).reshape(2, 13, 16))

    run_layer_contract(lambda: LongformerSelfAttention(2, 8, window=3, num_global=1), x,
                       expected_output_shape=(2, 13, 16), reference=reference, reference_uses_layer=True)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="window"):
        LongformerSelfAttention(2, 8, window=0)
    with pytest.raises(ValueError, match="num_global"):
        LongformerSelfAttention(2, 8, window=2, num_global=-1)
    with pytest.raises(ValueError, match="rank|dimensions|\\(batch, n, d_model\\)"):
        LongformerSelfAttention(2, 8, window=2)(np.zeros((2, 5), "float32"))


@pytest.mark.parametrize("n, block, num_global, num_random", [(24, 4, 0, 1), (30, 4, 2, 2), (29, 3, 1, 3), (28, 4, 5, 1)])
def test_bigbird_blockwise_equals_dense_attention_with_its_mask(n, block, num_global, num_random):
    from layers.sparse_attention import bigbird_mask, bigbird_random_blocks, block_sparse_attention

    q, k, v = _qkv(2, 2, n, 8)
    random_blocks = bigbird_random_blocks(n, block, num_random, num_global, seed=n)
    lengths = np.array([n, n - 5])
    padding = np.arange(n)[None] < lengths[:, None]
    mask = bigbird_mask(n, block, num_global, random_blocks)[None, None] & padding[:, None, None, :]
    got = ops.convert_to_numpy(block_sparse_attention(q, k, v, block, num_global, random_blocks, padding))
    expected = _dense(q, k, v, mask)
    for row, length in enumerate(lengths):
        np.testing.assert_allclose(got[row, :, :length], expected[row, :, :length], atol=1e-5)
    # The random blocks lie outside each block's window, are distinct, and are fixed by the seed.
    blocks = np.arange(len(random_blocks))[:, None]
    assert (np.abs(random_blocks - blocks) > 1).all()
    assert all(len(set(row)) == num_random for row in random_blocks.tolist())
    np.testing.assert_array_equal(random_blocks, bigbird_random_blocks(n, block, num_random, num_global, seed=n))


def test_bigbird_refuses_more_random_blocks_than_the_input_has():
    from layers.sparse_attention import bigbird_random_blocks

    with pytest.raises(ValueError, match="outside its window"):
        bigbird_random_blocks(12, 4, 1)


def test_bigbird_layer_contract_against_dense_attention_with_its_own_weights():
    from layers.sparse_attention import BigBirdSelfAttention, bigbird_mask, bigbird_random_blocks

    x = RNG.normal(size=(2, 24, 16)).astype("float32")

    def reference(layer, x):
        def heads(t):
            return np.transpose(t.reshape(2, 24, 2, 8), (0, 2, 1, 3))

        q, k, v = (heads(ops.convert_to_numpy(d(x))) for d in (layer.query_dense, layer.key_dense, layer.value_dense))
        mask = bigbird_mask(24, 4, 1, bigbird_random_blocks(24, 4, 1, 1, seed=3))
        out = _dense(q, k, v, mask[None, None])
        return layer.output_dense(np.transpose(out, (0, 2, 1, 3)).reshape(2, 24, 16))

    run_layer_contract(lambda: BigBirdSelfAttention(2, 8, block=4, num_global=1, num_random=1, seed=3), x,
                       expected_output_shape=(2, 24, 16), reference=reference, reference_uses_layer=True)


@pytest.mark.parametrize("n, window, num_global", [(16, 4, 0), (19, 4, 1), (23, 3, 2), (7, 2, 3)])
def test_causal_longformer_equals_dense_attention_with_the_causal_mask(n, window, num_global):
    q, k, v = _qkv(2, 2, n, 8)
    padding = np.arange(n)[None] < np.array([n, n - 2])[:, None]
    mask = longformer_mask(n, window, num_global, causal=True)[None, None] & padding[:, None, None, :]
    got = ops.convert_to_numpy(sliding_window_attention(q, k, v, window, num_global, padding, causal=True))
    expected = _dense(q, k, v, mask)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-5)
    np.testing.assert_allclose(got[1, :, : n - 2], expected[1, :, : n - 2], atol=1e-5)
    # No output depends on a later input.
    v_later = v.copy()
    v_later[:, :, -1] += 10.0
    changed = ops.convert_to_numpy(sliding_window_attention(q, k, v_later, window, num_global, causal=True))
    unchanged = ops.convert_to_numpy(sliding_window_attention(q, k, v, window, num_global, causal=True))
    np.testing.assert_allclose(changed[:, :, :-1], unchanged[:, :, :-1], atol=1e-6)


@pytest.mark.parametrize("n, block, num_global, num_random", [(24, 4, 0, 1), (30, 4, 2, 2)])
def test_causal_bigbird_equals_dense_attention_with_the_causal_mask(n, block, num_global, num_random):
    from layers.sparse_attention import bigbird_mask, bigbird_random_blocks, block_sparse_attention

    q, k, v = _qkv(1, 2, n, 8)
    random_blocks = bigbird_random_blocks(n, block, num_random, num_global, seed=1)
    mask = bigbird_mask(n, block, num_global, random_blocks, causal=True)[None, None]
    got = ops.convert_to_numpy(block_sparse_attention(q, k, v, block, num_global, random_blocks, causal=True))
    np.testing.assert_allclose(got, _dense(q, k, v, mask), atol=1e-5)


def test_a_window_or_block_longer_than_the_input_falls_back_to_full_attention():
    from layers.sparse_attention import BigBirdSelfAttention

    q, k, v = _qkv(1, 2, 9, 4)
    np.testing.assert_allclose(ops.convert_to_numpy(sliding_window_attention(q, k, v, 64)), _dense(q, k, v, None),
                               atol=1e-5)
    x = RNG.normal(size=(1, 9, 8)).astype("float32")
    bigbird = BigBirdSelfAttention(2, 4, block=16, num_random=2)
    longformer = LongformerSelfAttention(2, 4, window=64)
    longformer(x)
    bigbird(x)
    bigbird.set_weights(longformer.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(bigbird(x)), ops.convert_to_numpy(longformer(x)), atol=1e-5)

import keras
import keras_hub
import numpy as np
import pytest

from layers.position_encoding import LearnedPositionEmbedding, SinusoidalPositionEncoding
from tests.layer_harness import run_layer_contract, seeded_array

X = seeded_array(2, 12, 10)


def np_sinusoidal(length, d_model, start=0):
    """Section 5.2, written out: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)."""
    pe = np.zeros((length, d_model))
    for pos in range(start, start + length):
        for i in range(0, d_model, 2):
            pe[pos - start, i] = np.sin(pos / 10000 ** (i / d_model))
            if i + 1 < d_model:
                pe[pos - start, i + 1] = np.cos(pos / 10000 ** (i / d_model))
    return pe


def test_sinusoidal_contract_against_textbook_formula():
    run_layer_contract(
        SinusoidalPositionEncoding,
        X,
        expected_output_shape=X.shape,
        reference=lambda x: np.broadcast_to(np_sinusoidal(12, 10), x.shape),
        atol=1e-5,
    )


def test_sinusoidal_matches_keras_hub_and_odd_width():
    x = seeded_array(1, 9, 7)  # odd d_model: the last feature is a lone sine
    ours = keras.ops.convert_to_numpy(SinusoidalPositionEncoding()(x))
    np.testing.assert_allclose(ours[0], np_sinusoidal(9, 7), atol=1e-5)
    theirs = keras.ops.convert_to_numpy(keras_hub.layers.SinePositionEncoding()(x))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_sinusoidal_start_index_gives_absolute_positions():
    layer = SinusoidalPositionEncoding()
    step = keras.ops.convert_to_numpy(layer(X[:, :1], start_index=7))
    np.testing.assert_allclose(step[0, 0], np_sinusoidal(1, 10, start=7)[0], atol=1e-5)


def test_learned_position_embedding_contract_and_keras_hub_parity():
    report = run_layer_contract(
        lambda: LearnedPositionEmbedding(sequence_length=16),
        X,
        expected_output_shape=X.shape,
        reference=lambda layer, x: np.broadcast_to(keras.ops.convert_to_numpy(layer.embeddings)[:12], x.shape),
        reference_uses_layer=True,
    )
    theirs = keras_hub.layers.PositionEmbedding(sequence_length=16)
    theirs.build(X.shape)
    theirs.set_weights(report.layer.get_weights())
    np.testing.assert_allclose(report.outputs, keras.ops.convert_to_numpy(theirs(X)), atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(report.layer(X[:, :2], start_index=5)),
        keras.ops.convert_to_numpy(theirs(X[:, :2], start_index=5)),
    )


def test_learned_position_embedding_rejects_sequences_past_its_length():
    with pytest.raises(ValueError, match="has 8 positions, got a sequence of length 12"):
        LearnedPositionEmbedding(sequence_length=8)(X)


def test_position_encodings_reject_wrong_rank():
    with pytest.raises(ValueError, match="rank >= 2"):
        SinusoidalPositionEncoding()(np.zeros((5,), "float32"))
    with pytest.raises(ValueError, match="must be a positive integer"):
        LearnedPositionEmbedding(sequence_length=0)

"""Whisper (section 9.2): conv front end, sinusoids, and the model against keras-hub's WhisperBackbone."""

import keras
import keras_hub
import numpy as np
import pytest
from scipy.special import erf

from layers.generation import TextGenerator
from layers.whisper import (
    Whisper, WhisperConvFrontend, WhisperPositionEncoding, load_keras_hub_whisper, whisper_sinusoids,
)
from tests.layer_harness import run_layer_contract, seeded_array

VOCAB, MELS, FRAMES, LENGTH = 50, 8, 24, 16
SMALL = dict(hidden_dim=16, num_heads=2, intermediate_dim=32)
RNG = np.random.default_rng(0)
FEATURES = RNG.normal(size=(2, FRAMES, MELS)).astype("float32")
TOKENS = RNG.integers(1, VOCAB, (2, 7)).astype("int32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def _model(**kwargs):
    return Whisper(VOCAB, num_mels=MELS, max_audio_frames=FRAMES, max_length=LENGTH, **SMALL, **kwargs)


def _pair():
    backbone = keras_hub.models.WhisperBackbone(
        vocabulary_size=VOCAB, num_layers=2, num_mels=MELS, max_encoder_sequence_length=FRAMES,
        max_decoder_sequence_length=LENGTH, **SMALL,
    )
    return load_keras_hub_whisper(_model(), backbone), backbone


def _backbone_outputs(backbone, features, tokens, decoder_mask=None):
    mask = np.ones_like(tokens) if decoder_mask is None else decoder_mask.astype("int32")
    return backbone({"encoder_features": features, "decoder_token_ids": tokens, "decoder_padding_mask": mask})


def _gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def _conv1d(x, kernel, bias, stride, pad):
    """NumPy ``y[t] = sum_m x_pad[t * s + m] K[m] + b`` (cross-correlation, zero padding ``pad``)."""
    x = np.pad(x, [(0, 0), pad, (0, 0)])
    steps = (x.shape[1] - kernel.shape[0]) // stride + 1
    return np.stack(
        [np.einsum("bmc,mco->bo", x[:, t * stride:t * stride + kernel.shape[0]], kernel) for t in range(steps)], 1
    ) + bias


# -- the layers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [9, 10])
def test_whisper_conv_frontend_contract_matches_numpy_formula(frames):
    x = seeded_array(2, frames, MELS, seed=frames)

    def reference(layer, inputs):
        c1, c2 = layer.conv_1, layer.conv_2
        h = _gelu(_conv1d(inputs, to_np(c1.kernel), to_np(c1.bias), 1, (1, 1)))
        return _gelu(_conv1d(h, to_np(c2.kernel), to_np(c2.bias), 2, (1, 1)))

    run_layer_contract(
        lambda: WhisperConvFrontend(16), x, expected_output_shape=(2, (frames + 1) // 2, 16),
        reference=reference, reference_uses_layer=True, check_saved_model=frames == 9,
    )


def test_whisper_position_encoding_contract_is_openai_sinusoids():
    d, length = 16, 30
    half = d // 2
    expected = np.zeros((length, d), "float32")  # openai/whisper model.py sinusoids(), written out per entry
    for pos in range(length):
        for i in range(half):
            angle = pos * np.exp(-np.log(10000.0) * i / (half - 1))
            expected[pos, i], expected[pos, half + i] = np.sin(angle), np.cos(angle)
    np.testing.assert_allclose(whisper_sinusoids(length, d), expected, atol=1e-6)
    report = run_layer_contract(
        lambda: WhisperPositionEncoding(length), np.zeros((2, 12, d), "float32"), expected_output_shape=(2, 12, d),
        reference=lambda x: np.broadcast_to(expected[:12], x.shape), check_saved_model=False,
    )
    assert not report.layer.trainable_weights
    shifted = report.layer(np.zeros((1, 3, d), "float32"), start_index=5)
    np.testing.assert_allclose(to_np(shifted)[0], expected[5:8], atol=1e-6)


# -- parity with keras-hub ------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [FRAMES, FRAMES - 1], ids=["even_frames", "odd_frames"])
def test_whisper_encoder_and_decoder_equal_keras_hub_whisper_backbone(frames):
    ours, backbone = _pair()
    features = FEATURES[:, :frames]
    decoder_mask = np.array([[True] * 7, [True] * 5 + [False] * 2])
    expected = _backbone_outputs(backbone, features, TOKENS, decoder_mask)
    encoded = ours.encode(features)
    assert tuple(encoded[0].shape) == (2, FRAMES // 2, 16)
    assert np.std(to_np(encoded[0])) > 0.1  # a real signal, not a constant
    np.testing.assert_allclose(to_np(encoded[0]), to_np(expected["encoder_sequence_output"]), atol=1e-5)
    hidden = ours.decode_sequence(TOKENS, encoded, decoder_mask)
    np.testing.assert_allclose(to_np(hidden), to_np(expected["decoder_sequence_output"]), atol=1e-5)
    # The tied head: logits are the decoder output times keras-hub's token embedding, transposed.
    their_logits = to_np(expected["decoder_sequence_output"]) @ to_np(backbone.token_embedding.embeddings).T
    np.testing.assert_allclose(to_np(ours.decode(TOKENS, encoded, decoder_mask)), their_logits, atol=1e-5)


def test_whisper_model_contract_with_keras_hub_logits_reference():
    ours, backbone = _pair()
    # Whisper has no key bias: ours are zero and frozen, the only trainable weights left out.
    frozen = [w for w in ours.weights if not w.trainable]
    assert sorted({w.name for w in frozen}) == ["embeddings", "key_bias"] and len(frozen) == 1 + 6
    assert all(not np.any(to_np(w)) for w in frozen if w.name == "key_bias")

    def make():
        clone = _model()
        clone.build()
        clone.set_weights(ours.get_weights())
        return clone

    def reference(features, tokens):
        out = _backbone_outputs(backbone, features, tokens)["decoder_sequence_output"]
        return to_np(out) @ to_np(backbone.token_embedding.embeddings).T

    run_layer_contract(make, [FEATURES, TOKENS], expected_output_shape=(2, 7, VOCAB), reference=reference)


# -- generation -----------------------------------------------------------------------------------


def test_whisper_cached_greedy_decode_equals_uncached_argmax_and_beam_search_runs():
    keras.utils.set_random_seed(1)
    model = _model()
    encoded = model.encode(FEATURES)
    full = to_np(model.decode(TOKENS, encoded))
    cache = model.build_cache(2, LENGTH, encoded)
    logits, cache = model.call_with_cache(TOKENS[:, :3], cache, 0)
    steps = [to_np(logits)]
    for i in range(3, TOKENS.shape[1]):
        logits, cache = model.call_with_cache(TOKENS[:, i:i + 1], cache, i)
        steps.append(to_np(logits))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)

    prompt = np.ones((2, 1), "int32")
    cached = TextGenerator(model, max_new_tokens=10, jit_compile=False)(prompt, encoder_inputs=FEATURES)
    uncached = TextGenerator(model, max_new_tokens=10, use_cache=False, jit_compile=False)(
        prompt, encoder_inputs=FEATURES)
    np.testing.assert_array_equal(cached["token_ids"], uncached["token_ids"])
    # The same tokens by hand: argmax of the full recomputed logits, one token at a time.
    tokens = prompt
    for _ in range(10):
        tokens = np.concatenate([tokens, to_np(model.decode(tokens, encoded))[:, -1:].argmax(-1)], 1)
    np.testing.assert_array_equal(cached["token_ids"], tokens)
    beams = TextGenerator(model, sampler="beam", max_new_tokens=10, jit_compile=False)(
        prompt, encoder_inputs={"encoder_inputs": FEATURES, "encoder_padding_mask": np.ones((2, FRAMES), bool)},
        num_beams=3)
    assert beams["token_ids"].shape == (2, 11)
    one_beam = TextGenerator(model, sampler="beam", max_new_tokens=10, jit_compile=False)(
        prompt, encoder_inputs=FEATURES, num_beams=1)
    np.testing.assert_array_equal(one_beam["token_ids"], cached["token_ids"])


def test_whisper_padded_frames_leave_the_real_steps_unchanged():
    model = _model()
    real = 15  # odd: the last real step, 7 (frames 12..16), reads two padded frames, which are zeroed
    mask = np.array([[True] * FRAMES, [True] * real + [False] * (FRAMES - real)])
    changed = FEATURES.copy()
    changed[1, real:] = 100.0
    first, first_mask = model.encode({"encoder_inputs": FEATURES, "encoder_padding_mask": mask})
    second, _ = model.encode(changed, mask)
    np.testing.assert_array_equal(to_np(first_mask), mask[:, ::2])
    np.testing.assert_allclose(to_np(second)[1, :8], to_np(first)[1, :8], atol=1e-5)
    np.testing.assert_allclose(to_np(second)[0], to_np(first)[0], atol=1e-5)
    # Without the mask the padding value would reach step 7 through the convolutions.
    unmasked = to_np(model.encode(changed)[0])[1, 7] - to_np(model.encode(FEATURES)[0])[1, 7]
    assert np.abs(unmasked).max() > 1e-3


def test_whisper_overfits_a_tiny_batch():
    keras.utils.set_random_seed(0)
    model = _model()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = {"encoder_inputs": FEATURES, "decoder_token_ids": TOKENS[:, :-1]}
    history = model.fit(x, TOKENS[:, 1:], epochs=60, verbose=0)
    assert history.history["loss"][-1] < 0.1 * history.history["loss"][0]
    assert not np.any(to_np(model.decoder_layers[0].cross_attention.key_bias))


# -- errors ---------------------------------------------------------------------------------------


def test_whisper_rejects_bad_arguments_and_inputs():
    model = _model()
    with pytest.raises(ValueError, match="8 mel bins.*num_mel_bins=8"):
        model.encode(np.zeros((2, FRAMES, 80), "float32"))
    with pytest.raises(ValueError, match=r"rank 3 \(batch, frames, num_mels=8\).*\(24, 8\)"):
        model.encode(FEATURES[0])
    with pytest.raises(ValueError, match="rank 3"):
        model([FEATURES[0], TOKENS])
    with pytest.raises(ValueError, match="max_audio_frames=24"):
        model.encode(np.zeros((1, FRAMES + 2, MELS), "float32"))
    with pytest.raises(ValueError, match="encoder_padding_mask must be"):
        model.encode(FEATURES, np.ones((2, FRAMES // 2), bool))
    with pytest.raises(ValueError, match="encoder_inputs"):
        model.encode({"features": FEATURES})
    with pytest.raises(ValueError, match="even"):
        Whisper(VOCAB, hidden_dim=15, num_heads=3)
    with pytest.raises(ValueError, match="divisible"):
        Whisper(VOCAB, hidden_dim=16, num_heads=3)
    frontend = WhisperConvFrontend(16)
    frontend(FEATURES)
    with pytest.raises(ValueError, match="built for 8 mel bins"):
        frontend(np.zeros((2, FRAMES, 4), "float32"))
    backbone = keras_hub.models.WhisperBackbone(
        vocabulary_size=VOCAB, num_layers=1, num_mels=MELS, max_encoder_sequence_length=FRAMES,
        max_decoder_sequence_length=LENGTH, **SMALL,
    )
    with pytest.raises(ValueError, match=r"num_encoder_layers \(keras-hub 1, ours 2\)"):
        load_keras_hub_whisper(_model(), backbone)

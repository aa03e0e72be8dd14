"""Wav2Vec 2.0 (section 9.2): layers, pre-training losses, CTC decoding, and two tiny training runs.

Select with ``pytest -k wav2vec``. The training tests synthesize a handful of
utterances with ``espeak-ng`` (skipped when it is missing), so they do not
depend on the ``tfsuite_speech`` corpus build.
"""

import itertools
import os
import shutil
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import erf

from speech.ctc import (
    CHARACTERS, CTCFinetuneConfig, ctc_beam_search_decode, ctc_greedy_decode, ctc_loss, decode_ids, encode_text,
    finetune_ctc, make_ctc_batch,
)
from speech.wav2vec2_pretraining import (
    Wav2Vec2PretrainingConfig, codebook_usage, contrastive_loss, diversity_loss, evaluate_pretraining,
    pad_waveforms, pretrain_wav2vec2, sample_negative_indices, waveform_batches,
)
from layers.wav2vec2 import (
    GumbelVectorQuantizer, Wav2Vec2Backbone, Wav2Vec2CTC, Wav2Vec2FeatureEncoder, Wav2Vec2PositionalConvEmbedding,
    Wav2Vec2PreTrainer, compute_span_mask, frame_padding_mask,
)
from tests.layer_harness import run_layer_contract, seeded_array

TINY = dict(hidden_dim=16, num_layers=2, num_heads=2, intermediate_dim=32, conv_filters=16, pos_conv_kernel=8,
            pos_conv_groups=4, dropout=0.0)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def np_gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def np_conv1d(x, kernel, stride=1, groups=1):
    """Cross-correlation, valid padding: x (B, T, C), kernel (K, C / groups, O)."""
    k, cin, out = kernel.shape
    windows = np.lib.stride_tricks.sliding_window_view(x, k, axis=1)[:, ::stride]  # (B, T', C, K)
    per_group = out // groups
    y = []
    for g in range(groups):
        xs = windows[:, :, g * cin:(g + 1) * cin]
        y.append(np.einsum("btck,kco->bto", xs, kernel[:, :, g * per_group:(g + 1) * per_group]))
    return np.concatenate(y, axis=-1)


# --------------------------------------------------------------------------- feature encoder


def np_feature_encoder(layer, x):
    """Section 9.2: GELU(GroupNorm(conv_0(x))), then GELU(conv_i(.)); group norm per channel over time."""
    h = x[..., None].astype(np.float64)
    for i, (conv, norm) in enumerate(zip(layer.conv_layers, layer.norm_layers)):
        h = np_conv1d(h, to_np(conv.kernel), conv.strides[0])
        if norm is not None:
            mean, var = h.mean(axis=1, keepdims=True), h.var(axis=1, keepdims=True)
            h = (h - mean) / np.sqrt(var + layer.epsilon) * to_np(norm.gamma) + to_np(norm.beta)
        h = np_gelu(h)
    return h


def test_wav2vec2_feature_encoder_contract_against_numpy():
    report = run_layer_contract(
        lambda: Wav2Vec2FeatureEncoder(filters=8),
        seeded_array(2, 1600, seed=3),
        expected_output_shape=(2, 4, 8),
        reference=np_feature_encoder,
        reference_uses_layer=True,
        atol=1e-4, rtol=1e-4,
    )
    assert report.layer.get_config()["kernel_sizes"] == (10, 3, 3, 3, 3, 2, 2)


def test_wav2vec2_feature_encoder_output_length_formula():
    enc = Wav2Vec2FeatureEncoder(filters=4)
    assert enc.receptive_field == 400  # 25 ms at 16 kHz
    assert enc.output_length(16000) == 49 and enc.output_length(400) == 1 and enc.output_length(399) == 0
    for samples in (400, 719, 720, 1999, 16000, 16321):
        expected = samples
        for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)):
            expected = (expected - k) // s + 1
        assert enc.output_length(samples) == expected
        assert enc(np.zeros((1, samples), "float32")).shape == (1, expected, 4)
    # Roughly one frame per 320 samples (20 ms), and the formula works on tensors (CTC logit lengths).
    assert abs(enc.output_length(320 * 1000) - 1000) <= 2
    np.testing.assert_array_equal(to_np(enc.output_length(tf.constant([400, 16000, 16321]))), [1, 49, 50])
    custom = Wav2Vec2FeatureEncoder(filters=(4, 6), kernel_sizes=(4, 2), strides=(2, 2), norm="layer")
    assert custom.receptive_field == 6 and custom(np.zeros((1, 20), "float32")).shape == (1, 4, 6)


def test_wav2vec2_feature_encoder_rejects_short_waveforms_and_wrong_rank():
    enc = Wav2Vec2FeatureEncoder(filters=4)
    with pytest.raises(ValueError, match="at least 400 samples"):
        enc(np.zeros((2, 399), "float32"))
    with pytest.raises(ValueError, match=r"rank 2 \(batch, samples\)"):
        enc(np.zeros((2, 1600, 1), "float32"))
    backbone = Wav2Vec2Backbone(**TINY)
    with pytest.raises(ValueError, match=r"rank 2 \(batch, samples\)"):
        backbone(np.zeros((1600,), "float32"))
    backbone(np.zeros((1, 1600), "float32"))
    with pytest.raises(ValueError, match="at least 400 samples"):
        backbone(np.zeros((1, 300), "float32"))


# --------------------------------------------------------------------------- position embedding


def np_pos_conv(layer, x):
    k = layer.kernel_size
    kernel = to_np(layer.kernel)
    if layer.weight_norm:  # W = g v / ||v||, one gain per kernel tap
        kernel = to_np(layer.kernel_g) * kernel / np.sqrt((kernel**2).sum(axis=(1, 2), keepdims=True))
    padded = np.pad(x, [(0, 0), (k // 2, k - 1 - k // 2), (0, 0)])
    return np_gelu(np_conv1d(padded, kernel, groups=layer.groups) + to_np(layer.bias))


@pytest.mark.parametrize("kernel_size, weight_norm", [(8, True), (5, False)])
def test_wav2vec2_positional_conv_embedding_contract_against_numpy(kernel_size, weight_norm):
    report = run_layer_contract(
        lambda: Wav2Vec2PositionalConvEmbedding(kernel_size, groups=4, weight_norm=weight_norm),
        seeded_array(2, 11, 16, seed=4),
        expected_output_shape=(2, 11, 16),
        reference=np_pos_conv,
        reference_uses_layer=True,
        atol=1e-5, rtol=1e-4,
    )
    layer = report.layer
    if weight_norm:  # g starts at ||v||, so the effective kernel is v
        np.testing.assert_allclose(to_np(layer.effective_kernel()), to_np(layer.kernel), rtol=1e-5, atol=1e-6)
    # A step's embedding reads only its K-neighbourhood (relative position).
    x = seeded_array(1, 30, 16, seed=5)
    y = x.copy()
    y[:, 0] += 1.0
    changed = np.abs(to_np(layer(y)) - to_np(layer(x))).max(axis=-1)[0] > 0
    assert changed[: kernel_size - kernel_size // 2].all() and not changed[kernel_size:].any()


def test_wav2vec2_positional_conv_embedding_rejects_bad_groups():
    with pytest.raises(ValueError, match="must divide the channels"):
        Wav2Vec2PositionalConvEmbedding(4, groups=3)(np.zeros((1, 5, 16), "float32"))


# --------------------------------------------------------------------------- quantizer


def np_quantizer(layer, x):
    g, v = layer.num_groups, layer.num_vars
    logits = (x @ to_np(layer.weight_proj.kernel) + to_np(layer.weight_proj.bias)).reshape(*x.shape[:2], g, v)
    onehot = np.eye(v)[logits.argmax(-1)]
    codewords = np.einsum("btgv,gvd->btgd", onehot, to_np(layer.codevectors)).reshape(*x.shape[:2], -1)
    quantized = codewords @ to_np(layer.output_projection.kernel) + to_np(layer.output_projection.bias)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    mean = probs.reshape(-1, g, v).mean(0)
    perplexity = np.exp(-(mean * np.log(mean + 1e-7)).sum(-1))
    return {"quantized": quantized, "onehot": onehot, "probs": probs, "perplexity": perplexity}


def test_wav2vec2_quantizer_contract_against_numpy():
    run_layer_contract(
        lambda: GumbelVectorQuantizer(num_groups=2, num_vars=8, codevector_dim=12, output_dim=10, seed=1,
                                      logits_initializer=keras.initializers.RandomNormal(0, 0.3)),
        seeded_array(2, 7, 16, seed=6),
        # dict outputs in key order: onehot, perplexity, probs, quantized
        expected_output_shape=[(2, 7, 2, 8), (2,), (2, 7, 2, 8), (2, 7, 10)],
        reference=np_quantizer,
        reference_uses_layer=True,
        atol=1e-4, rtol=1e-4,
    )


def test_wav2vec2_quantizer_hard_one_hot_and_straight_through_gradients():
    layer = GumbelVectorQuantizer(num_groups=2, num_vars=16, codevector_dim=8, output_dim=8, seed=0)
    x = tf.constant(seeded_array(3, 9, 12, seed=7))
    inference = to_np(layer(x)["onehot"])
    np.testing.assert_array_equal(inference.sum(-1), np.ones((3, 9, 2)))
    assert set(np.unique(inference)) == {0.0, 1.0}
    again = to_np(layer(x)["onehot"])
    np.testing.assert_array_equal(inference, again)  # argmax, no noise

    layer.set_temperature(0.7)
    assert float(layer.temperature) == pytest.approx(0.7)
    with tf.GradientTape() as tape:
        out = layer(x, training=True)
        loss = tf.reduce_sum(out["quantized"] * tf.random.stateless_normal(out["quantized"].shape, seed=[1, 2]))
    training = to_np(out["onehot"])
    np.testing.assert_allclose(training.sum(-1), 1.0, atol=1e-6)  # hard in value ...
    assert np.all(np.isclose(training, 0, atol=1e-6) | np.isclose(training, 1, atol=1e-6))
    # ... and the logits get the soft sample's gradient through the quantized output alone.
    grads = tape.gradient(loss, [layer.weight_proj.kernel, layer.codevectors])
    assert all(g is not None and np.abs(to_np(g)).sum() > 0 for g in grads)
    assert all(w is not layer.temperature for w in layer.trainable_weights)


# --------------------------------------------------------------------------- backbone and masks


def test_wav2vec2_backbone_contract():
    span = np.zeros((2, 4), bool)
    span[:, 1:3] = True
    run_layer_contract(
        lambda: Wav2Vec2Backbone(**TINY),
        seeded_array(2, 1600, seed=8),
        expected_output_shape=[(2, 4, 16), (2, 4, 16)],  # context, features
        call_kwargs={"span_mask": span},
        atol=1e-4, rtol=1e-4,
    )


def test_wav2vec2_backbone_masking_and_padding():
    backbone = Wav2Vec2Backbone(**TINY)
    a, b = seeded_array(1, 3200, seed=9), seeded_array(1, 3200, seed=10)
    everything = np.ones((1, 9), bool)
    # Every frame replaced by the mask embedding: the context no longer depends on the audio.
    np.testing.assert_allclose(to_np(backbone(a, span_mask=everything)["context"]),
                               to_np(backbone(b, span_mask=everything)["context"]), atol=1e-5)
    assert not np.allclose(to_np(backbone(a)["context"]), to_np(backbone(b)["context"]), atol=1e-3)
    # Frame padding mask from sample lengths: 3200 samples -> 9 frames, 1600 -> 4.
    padding = np.zeros((2, 3200), bool)
    padding[0], padding[1, :1600] = True, True
    mask = to_np(frame_padding_mask(backbone.feature_encoder, padding, 9))
    np.testing.assert_array_equal(mask.sum(-1), [9, 4])
    out = backbone(np.concatenate([a, b]), padding_mask=padding)
    assert out["context"].shape == (2, 9, 16) and np.isfinite(to_np(out["context"])).all()
    np.testing.assert_array_equal(to_np(backbone.frame_lengths(tf.constant([3200, 1600]))), [9, 4])
    # A recording's context does not depend on the padding of its batch (the first GroupNorm reads real frames).
    alone = backbone(b[:, :1600], padding_mask=np.ones((1, 1600), bool))["context"]
    np.testing.assert_allclose(to_np(out["context"])[1, :4], to_np(alone)[0], atol=2e-5)
    bigger = np.concatenate([b[:, :1600], np.full((1, 1600), 0.5, "float32")], axis=1)  # other padding values
    again = backbone(np.concatenate([a, bigger]), padding_mask=padding)["context"]
    np.testing.assert_allclose(to_np(again)[1, :4], to_np(alone)[0], atol=2e-5)


def test_wav2vec2_span_mask_sampling():
    mask = compute_span_mask(64, 100, 0.65, 10, seed=0)
    assert mask.shape == (64, 100) and mask.dtype == bool
    # ~ 1 - (1 - p)^M masked with overlapping spans (p = 0.065): about 49 %.
    assert 0.4 < mask.mean() < 0.6
    np.testing.assert_array_equal(mask, compute_span_mask(64, 100, 0.65, 10, seed=0))
    # Every run of masked frames is at least M long (spans are M long; overlaps merge them).
    for row in mask:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], row.astype(int), [0]])))
        assert (np.diff(edges)[::2] >= 10).all()
    short = compute_span_mask(3, 50, 0.65, 5, frame_lengths=[50, 20, 12], seed=1)
    assert not short[1, 20:].any() and not short[2, 12:].any()
    assert (short.sum(-1) >= 5).all()  # min_masks=2 spans of 5 (they may overlap)
    assert not compute_span_mask(2, 50, 0.0, 5, min_masks=0, seed=0).any()


def test_wav2vec2_negative_sampling_draws_other_masked_steps_of_the_same_utterance():
    mask = compute_span_mask(4, 60, 0.5, 5, seed=3)
    neg = sample_negative_indices(mask, 20, seed=4)
    assert neg.shape == (4, 60, 20)
    for b in range(4):
        for t in np.flatnonzero(mask[b]):
            assert mask[b, neg[b, t]].all() and (neg[b, t] != t).all()
    # Uniform over the other masked steps: all of them appear with enough draws.
    many = sample_negative_indices(mask[:1], 2000, seed=5)
    t = np.flatnonzero(mask[0])[0]
    assert set(many[0, t]) == set(np.flatnonzero(mask[0])) - {t}


# --------------------------------------------------------------------------- losses


def np_contrastive(c, q, mask, neg, kappa):
    """-log exp(sim(c_t, q_t)/k) / sum_{q~ in Q_t} exp(sim(c_t, q~)/k), identical distractors left out."""
    cos = lambda a, b: (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))  # noqa: E731
    losses = []
    for b, t in zip(*np.nonzero(mask)):
        candidates = [q[b, t]] + [q[b, j] for j in neg[b, t] if not np.array_equal(q[b, j], q[b, t])]
        logits = np.array([cos(c[b, t], x) for x in candidates]) / kappa
        losses.append(-(logits[0] - np.log(np.exp(logits).sum())))
    return np.mean(losses)


def test_wav2vec2_contrastive_loss_matches_numpy():
    c, q = seeded_array(3, 20, 8, seed=11), seeded_array(3, 20, 8, seed=12)
    q[0, 5] = q[0, 7]  # two steps with the same codewords: not distractors of each other
    mask = compute_span_mask(3, 20, 0.5, 4, seed=13)
    mask[0, [5, 7]] = True
    neg = sample_negative_indices(mask, 6, seed=14)
    for kappa in (0.1, 1.0):
        got = float(contrastive_loss(c, q, mask, neg, kappa))
        assert got == pytest.approx(np_contrastive(c, q, mask, neg, kappa), rel=1e-5)
    # A context equal to its target (and far from the rest) scores near zero; chance is log(K + 1).
    perfect = float(contrastive_loss(q * 1.0, q, mask, neg, 0.01))
    assert perfect < 0.5


def np_diversity(probs, mask):
    g, v = probs.shape[-2:]
    mean = probs[mask].mean(axis=0)
    return (g * v - np.exp(-(mean * np.log(mean + 1e-7)).sum(-1)).sum()) / (g * v)


def test_wav2vec2_diversity_loss_matches_numpy():
    logits = seeded_array(2, 10, 2, 16, seed=15)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    mask = seeded_array(2, 10, seed=16) > 0
    assert float(diversity_loss(probs, mask)) == pytest.approx(np_diversity(probs, mask), rel=1e-5)
    all_steps = np.ones((2, 10), bool)
    assert float(diversity_loss(probs)) == pytest.approx(np_diversity(probs, all_steps), rel=1e-5)
    uniform = np.full((4, 5, 2, 16), 1 / 16, "float32")
    assert float(diversity_loss(uniform)) == pytest.approx(0.0, abs=1e-5)  # every entry used equally
    collapsed = np.zeros((4, 5, 2, 16), "float32")
    collapsed[..., 3] = 1.0
    assert float(diversity_loss(collapsed)) == pytest.approx((32 - 2) / 32, abs=1e-5)  # one entry per group
    assert codebook_usage(collapsed) == pytest.approx(2 / 32)


# --------------------------------------------------------------------------- a small slice of audio

SENTENCES = ["where is mary", "john went to the kitchen", "the apple is in the garden",
             "sandra picked up the football", "daniel travelled to the office", "where is the milk"]


@pytest.fixture(scope="module")
def espeak_utterances(tmp_path_factory):
    """Six synthesized utterances (1-2 s, 16 kHz float32) and their transcripts."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); it synthesizes the test audio")
    from pipelines.audio import load_audio

    root = tmp_path_factory.mktemp("espeak")
    waveforms = []
    for i, text in enumerate(SENTENCES):
        path = os.path.join(root, f"{i}.wav")
        subprocess.run(["espeak-ng", "-w", path, text], check=True, capture_output=True)
        waveforms.append(load_audio(path))
    return waveforms, SENTENCES


def test_wav2vec2_pretraining_on_small_slice_lowers_contrastive_loss_and_uses_the_codebook(espeak_utterances):
    waveforms, _ = espeak_utterances
    # Small masks and K for 1 s crops (49 frames); the Gumbel temperature anneals 2 -> 0.5 within the run.
    config = Wav2Vec2PretrainingConfig(steps=100, batch_size=6, crop_samples=16000, learning_rate=2e-3,
                                       mask_prob=0.5, mask_length=4, num_negatives=10,
                                       gumbel_temperature_decay=0.97, seed=0)
    quantizer = GumbelVectorQuantizer(num_groups=2, num_vars=16, codevector_dim=32, output_dim=16, seed=0)
    model = Wav2Vec2PreTrainer(Wav2Vec2Backbone(**{**TINY, "hidden_dim": 32, "conv_filters": 32}), quantizer,
                               projection_dim=16)
    held_out = [pad_waveforms(waveforms)]
    before = evaluate_pretraining(model, held_out, config)
    history = pretrain_wav2vec2(model, waveform_batches(waveforms, config), config)
    after = evaluate_pretraining(model, held_out, config)
    assert len(history["loss"]) == 100 and np.isfinite(history["loss"]).all()
    assert history["temperature"][-1] == pytest.approx(0.5)
    assert np.mean(history["contrastive"][-10:]) < np.mean(history["contrastive"][:10]) - 0.2, history["contrastive"]
    # Same masks and distractors before and after (evaluation seed), argmax codewords.
    assert after["contrastive"] < before["contrastive"] - 0.4, (before, after)
    assert after["contrastive"] < np.log(config.num_negatives + 1) - 0.15, after  # better than chance among K + 1
    assert after["codebook_usage"] > 0.5, after  # more than half of the G * V = 32 entries


# --------------------------------------------------------------------------- CTC


def np_greedy(logits, lengths, blank=0):
    out = []
    for row, n in zip(logits, lengths):
        best = row[:n].argmax(-1)
        collapsed = [c for i, c in enumerate(best) if i == 0 or c != best[i - 1]]
        out.append([int(c) for c in collapsed if c != blank])
    return out


def test_wav2vec2_ctc_greedy_decode_matches_numpy():
    logits = seeded_array(4, 12, 6, seed=17, scale=3.0)
    logits[0, :, 0] = -10  # no blanks at all
    logits[1, 3:7] = np.eye(6)[[2, 2, 0, 2]] * 20  # a repeat split by a blank stays doubled
    lengths = np.array([12, 9, 5, 1])
    got = ctc_greedy_decode(logits, lengths)
    assert got == np_greedy(logits, lengths)
    assert ctc_greedy_decode(logits[1:2, 3:7]) == [[2, 2]]
    full = ctc_greedy_decode(logits)
    assert full == np_greedy(logits, [12] * 4)
    ids = encode_text("hello")
    spiked = np.full((1, 7, len(CHARACTERS) + 1), -5.0, "float32")
    for t, c in enumerate([ids[0], ids[1], ids[2], ids[2], 0, ids[3], ids[4]]):
        spiked[0, t, c] = 5.0
    assert ctc_greedy_decode(spiked, characters=CHARACTERS) == ["hello"]  # h e l l _ l o


def test_wav2vec2_ctc_beam_search_beats_best_path_on_crafted_logits():
    # Two frames, p(blank) = 0.6, p(a) = 0.4: best path "" (0.36) but p("a") = .16 + .24 + .24 = .64.
    probs = np.array([[[0.6, 0.4], [0.6, 0.4]]], "float32")
    logits = np.log(probs)
    assert ctc_greedy_decode(logits) == [[]]
    hypotheses, scores = ctc_beam_search_decode(logits, beam_width=4, top_paths=2)
    assert hypotheses == [[[1], []]]
    np.testing.assert_allclose(scores[0], np.log([0.64, 0.36]), atol=1e-4)
    # The CTC loss sums the same paths: -log p("a") = -log 0.64.
    loss = ctc_loss(np.array([[1]]), logits, np.array([1]), np.array([2]))
    np.testing.assert_allclose(to_np(loss), [-np.log(0.64)], atol=1e-4)
    # Over characters, with a blank in the middle of a word's double letter.
    ids = encode_text("all")
    spiked = np.full((1, 5, len(CHARACTERS) + 1), -8.0, "float32")
    for t, c in enumerate([ids[0], ids[1], 0, ids[2], ids[2]]):
        spiked[0, t, c] = 8.0
    hypotheses, _ = ctc_beam_search_decode(spiked, characters=CHARACTERS)
    assert hypotheses == [["all"]] and decode_ids(ids) == "all"
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode_text("hello!")


def test_wav2vec2_ctc_overfits_two_utterances(espeak_utterances):
    waveforms, transcripts = espeak_utterances
    waveforms, transcripts = waveforms[:1] + waveforms[5:], [transcripts[0], transcripts[5]]
    model = Wav2Vec2CTC(Wav2Vec2Backbone(**{**TINY, "hidden_dim": 32, "conv_filters": 32}), len(CHARACTERS))
    batch = make_ctc_batch(waveforms, transcripts)
    config = CTCFinetuneConfig(steps=80, learning_rate=3e-3, freeze_feature_encoder=False)
    history = finetune_ctc(model, itertools.repeat(batch), config)
    assert history["loss"][-1] < 0.1 * history["loss"][0], history["loss"][::10]
    logits = model(batch["waveform"], padding_mask=batch["padding_mask"])
    lengths = model.backbone.frame_lengths(batch["padding_mask"].sum(-1).astype("int32"))
    assert ctc_greedy_decode(logits, lengths, characters=CHARACTERS) == transcripts
    assert [h[0] for h in ctc_beam_search_decode(logits, lengths, characters=CHARACTERS)[0]] == transcripts


def test_wav2vec2_models_round_trip_through_config_and_keras_file(tmp_path):
    waveform = seeded_array(2, 1600, seed=18)
    span = np.zeros((2, 4), bool)
    span[:, :2] = True
    pretrainer = Wav2Vec2PreTrainer(Wav2Vec2Backbone(**TINY), GumbelVectorQuantizer(2, 4, 8, 8), projection_dim=8)
    ctc = Wav2Vec2CTC(Wav2Vec2Backbone(**TINY), vocab_size=len(CHARACTERS))
    for model, kwargs in ((pretrainer, {"span_mask": span}), (ctc, {})):
        out = model(waveform, **kwargs)
        clone = type(model).from_config(model.get_config())
        clone(waveform, **kwargs)
        clone.set_weights(model.get_weights())
        for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(clone(waveform, **kwargs))):
            np.testing.assert_allclose(to_np(a), to_np(b), atol=1e-5)
        path = str(tmp_path / f"{type(model).__name__}.keras")
        model.save(path)
        reloaded = keras.models.load_model(path)
        for a, b in zip(tf.nest.flatten(out), tf.nest.flatten(reloaded(waveform, **kwargs))):
            np.testing.assert_allclose(to_np(a), to_np(b), atol=1e-5)
    assert ctc(waveform).shape == (2, 4, len(CHARACTERS) + 1)
    with pytest.raises(ValueError, match="must equal projection_dim"):
        Wav2Vec2PreTrainer(Wav2Vec2Backbone(**TINY), GumbelVectorQuantizer(2, 4, 8, 8), projection_dim=16)

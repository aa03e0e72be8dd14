"""CLIP (layers/clip.py): the layer contract, keras-hub parity of the text side, the loss, the temperature, training.

References:

* the text encoder: ``keras_hub.models.CLIPTextEncoder`` (exact GELU, our
  layer-norm epsilon) with our weights copied into it, its hidden state read
  at the end-of-text token (``CLIPTextPooler``: argmax of the ids, the EOT id
  being the largest) and times our ``W_t``: to 1e-5;
* the image encoder: NumPy ``y W_i`` on the backbone's pooled vector (our ViT,
  itself checked against keras-hub's ViT in ``test_vision_transformer.py``, or
  a small CNN);
* the model: NumPy of ``(1 / 0.07) normalize(I) normalize(T)^T`` on the encoders' outputs;
* the loss: NumPy of the symmetric cross-entropy with targets ``arange(B)``;
* training: 8 synthetic (coloured square, caption) pairs, image-to-text recall@1.
"""

import math

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from layers.clip import (
    CLIP, CLIPImageEncoder, CLIPLoss, CLIPTextEncoder, LogitScaleClip, clip_loss, clip_model, l2_normalize,
)
from layers.vision_transformer import VisionTransformer
from tests.layer_harness import run_layer_contract, seeded_array

VOCAB, SEQ, LAYERS, HEADS, HIDDEN, FF, EMBED = 20, 6, 2, 2, 16, 32, 8
EOT = VOCAB - 1
B = 2
IMAGE_SHAPE, PATCH = (16, 16, 3), 4
IMAGES = seeded_array(B, *IMAGE_SHAPE, seed=1)
# Caption 0 fills every position (so gradients reach every position row); caption 1 ends at position 3.
TOKENS = np.array([[3, 7, 4, 9, 2, EOT], [5, 1, 8, EOT, 0, 0]], "int32")
MASK = np.array([[1] * SEQ, [1, 1, 1, 1, 0, 0]], "int32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def np_normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def np_clip_loss(logits):
    """``(mean_i -log softmax(S_i.)_i + mean_j -log softmax(S_.j)_j) / 2`` in float64."""
    s = np.asarray(logits, "float64")
    rows = s - s.max(1, keepdims=True)
    rows = rows - np.log(np.exp(rows).sum(1, keepdims=True))
    cols = s - s.max(0, keepdims=True)
    cols = cols - np.log(np.exp(cols).sum(0, keepdims=True))
    return (-np.mean(np.diag(rows)) - np.mean(np.diag(cols))) / 2


def _text_encoder(**kwargs):
    model = CLIPTextEncoder(VOCAB, SEQ, LAYERS, HEADS, HIDDEN, FF, EMBED, **kwargs)
    model.build()
    return model


def _vit():
    return VisionTransformer(IMAGE_SHAPE, PATCH, num_layers=1, num_heads=HEADS, hidden_dim=HIDDEN, mlp_dim=FF)


# --- CLIPTextEncoder ----------------------------------------------------------------------------


def _keras_hub_text(ours):
    theirs = keras_hub.models.CLIPTextEncoder(
        VOCAB, HIDDEN, HIDDEN, LAYERS, HEADS, FF, intermediate_activation="gelu", max_sequence_length=SEQ,
    )
    theirs.layer_norm.epsilon = ours.layer_norm_epsilon  # keras-hub's final LN has 1e-6, its blocks 1e-5
    theirs.embedding.token_embedding.embeddings.assign(ours.token_embeddings)
    theirs.embedding.position_embedding.position_embeddings.assign(ours.position_embedding.embeddings)
    for mine, hub in zip(ours.transformer_layers, theirs.encoder_layers):
        hub.layer_norm_1.set_weights(mine.self_attention_layer_norm.get_weights())
        hub.attention.set_weights(mine.self_attention.get_weights())
        hub.layer_norm_2.set_weights(mine.feedforward_layer_norm.get_weights())
        hub.dense_1.set_weights(mine.feedforward.intermediate_dense.get_weights())
        hub.dense_2.set_weights(mine.feedforward.output_dense.get_weights())
    theirs.layer_norm.set_weights(ours.layer_norm.get_weights())
    return theirs


def test_text_encoder_contract_with_keras_hub_clip_text_encoder_reference():
    keras.utils.set_random_seed(3)
    source = _text_encoder()
    # Non-zero biases and layer-norm offsets, so a mis-copied bias cannot hide.
    for variable in source.weights:
        if "bias" in variable.path or "beta" in variable.path:
            variable.assign(seeded_array(*variable.shape, seed=len(variable.path), scale=0.1))
    theirs = _keras_hub_text(source)
    projection = to_np(source.projection.kernel)

    def make():
        model = _text_encoder()
        model.set_weights(source.get_weights())
        return model

    def reference(tokens, mask):
        sequence = to_np(theirs({"token_ids": tokens}))  # causal, no padding mask: keras-hub's CLIP
        eot = np.argmax(tokens, axis=-1)  # keras-hub's CLIPTextPooler: the EOT id is the largest id
        return sequence[np.arange(len(tokens)), eot] @ projection

    report = run_layer_contract(make, [TOKENS, MASK], expected_output_shape=(B, EMBED), reference=reference)
    difference = np.abs(report.outputs - reference(TOKENS, MASK)).max()
    print(f"keras-hub CLIPTextEncoder parity: max |difference| = {difference:.3g}")


def test_text_feature_is_read_at_the_last_real_token_and_ignores_the_padding():
    model = _text_encoder()
    short = to_np(model({"token_ids": TOKENS[1:, :4]}))  # no mask: the last position, here the EOT
    for filler in (0, 11):
        padded = TOKENS[1:].copy()
        padded[:, 4:] = filler
        out = to_np(model({"token_ids": padded, "padding_mask": MASK[1:]}))
        np.testing.assert_allclose(out, short, atol=1e-5)
    # Bidirectional attention (use_causal_mask=False): the padding mask alone keeps the padding out.
    bidirectional = _text_encoder(use_causal_mask=False)
    masked = to_np(bidirectional({"token_ids": TOKENS[1:], "padding_mask": MASK[1:]}))
    np.testing.assert_allclose(masked, to_np(bidirectional({"token_ids": TOKENS[1:, :4]})), atol=1e-5)
    # A caption's feature does not depend on the longer captions batched with it.
    mixed = to_np(model({"token_ids": TOKENS, "padding_mask": MASK}))
    np.testing.assert_allclose(mixed[1:], short, atol=1e-5)


# --- CLIPImageEncoder ---------------------------------------------------------------------------


def test_image_encoder_contract_on_our_vit_against_numpy_projection_of_the_class_token():
    def make():
        return CLIPImageEncoder(_vit(), EMBED)

    def reference(layer, images):
        return to_np(layer.backbone(images)["pooled_output"]) @ to_np(layer.projection.kernel)

    report = run_layer_contract(make, IMAGES, expected_output_shape=(B, EMBED), reference=reference,
                                reference_uses_layer=True)
    assert not report.layer.projection.use_bias and report.layer.image_shape == IMAGE_SHAPE


def _small_cnn():
    inputs = keras.Input(IMAGE_SHAPE)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x), name="cnn")


def test_image_encoder_contract_on_any_keras_model_returning_a_vector():
    def reference(layer, images):
        return to_np(layer.backbone(images)) @ to_np(layer.projection.kernel)

    report = run_layer_contract(lambda: CLIPImageEncoder(_small_cnn(), EMBED), IMAGES,
                                expected_output_shape=(B, EMBED), reference=reference, reference_uses_layer=True)
    assert report.layer.projection.kernel.shape == (6, EMBED)


# --- CLIP ---------------------------------------------------------------------------------------


def _clip(**kwargs):
    text = CLIPTextEncoder(VOCAB, SEQ, 1, HEADS, HIDDEN, FF, EMBED)
    return CLIP(CLIPImageEncoder(_vit(), EMBED), text, **kwargs)


def test_clip_contract_against_numpy_cosine_logits_with_scale_one_over_007():
    def reference(layer, images, tokens, mask):
        image = np_normalize(to_np(layer.image_encoder(images)))
        text = np_normalize(to_np(layer.text_encoder({"token_ids": tokens, "padding_mask": mask})))
        logits = image @ text.T / 0.07
        return {"image_embeddings": image, "text_embeddings": text, "logits_per_image": logits,
                "logits_per_text": logits.T}

    # Sorted output keys: image_embeddings, logits_per_image, logits_per_text, text_embeddings.
    report = run_layer_contract(_clip, [IMAGES, TOKENS, MASK], expected_output_shape=[(B, EMBED), (B, B), (B, B),
                                (B, EMBED)], reference=reference, reference_uses_layer=True, atol=1e-4)
    model = report.layer
    np.testing.assert_allclose(np.linalg.norm(report.outputs["image_embeddings"], axis=-1), 1.0, atol=1e-5)
    # The retrieval methods give the call's embeddings.
    np.testing.assert_allclose(to_np(model.encode_image(IMAGES)), report.outputs["image_embeddings"], atol=1e-6)
    np.testing.assert_allclose(to_np(model.encode_text(TOKENS, MASK)), report.outputs["text_embeddings"], atol=1e-6)
    raw = to_np(model.encode_text(TOKENS, MASK, normalize=False))
    np.testing.assert_allclose(np_normalize(raw), report.outputs["text_embeddings"], atol=1e-6)


def test_clip_scores_other_batch_sizes_for_retrieval():
    model = _clip()
    out = model({"images": seeded_array(3, *IMAGE_SHAPE, seed=5), "token_ids": TOKENS, "padding_mask": MASK})
    assert out["logits_per_image"].shape == (3, B) and out["logits_per_text"].shape == (B, 3)


# --- the loss -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch, scale, seed", [(1, 1.0, 0), (2, 3.0, 1), (5, 14.3, 2), (8, 100.0, 3),
                                                (16, 0.5, 4)])
def test_clip_loss_is_the_numpy_symmetric_cross_entropy(batch, scale, seed):
    logits = seeded_array(batch, batch, seed=seed, scale=scale)
    np.testing.assert_allclose(float(clip_loss(logits)), np_clip_loss(logits), rtol=1e-5, atol=1e-5)
    # Rows and columns weigh the same: the loss of S^T is the loss of S.
    np.testing.assert_allclose(float(clip_loss(logits.T)), float(clip_loss(logits)), rtol=1e-6)
    loss = CLIPLoss()
    np.testing.assert_allclose(float(loss(np.zeros(batch, "float32"), logits)), np_clip_loss(logits), rtol=1e-5,
                               atol=1e-5)
    assert keras.losses.deserialize(keras.losses.serialize(loss)).get_config() == loss.get_config()


def test_clip_loss_is_zero_for_separated_pairs_and_log_b_for_equal_logits():
    # Unit vectors: own pair cosine 1, every other at most ~0, times the maximum scale 100.
    embeddings = np.eye(8, dtype="float32")
    assert float(clip_loss(100.0 * embeddings @ embeddings.T)) < 1e-6
    # All logits equal: each row and column is uniform, -log(1/B).
    np.testing.assert_allclose(float(clip_loss(np.full((8, 8), 3.0, "float32"))), math.log(8), rtol=1e-6)
    with pytest.raises(ValueError, match=r"square \(B, B\) logits matrix"):
        clip_loss(np.zeros((3, 4), "float32"))
    with pytest.raises(ValueError, match="rank 2"):
        clip_loss(np.zeros((3,), "float32"))


# --- the temperature ----------------------------------------------------------------------------


def test_logit_scale_is_trainable_starts_at_log_1_over_007_and_is_clipped_at_log_100():
    model = _clip()
    model({"images": IMAGES, "token_ids": TOKENS, "padding_mask": MASK})
    assert any(w is model.logit_scale for w in model.trainable_weights)
    np.testing.assert_allclose(float(to_np(model.logit_scale)), math.log(1 / 0.07), rtol=1e-6)
    np.testing.assert_allclose(float(to_np(model.scale())), 1 / 0.07, rtol=1e-5)

    # The loss reaches the temperature.
    with tf.GradientTape() as tape:
        loss = clip_loss(model({"images": IMAGES, "token_ids": TOKENS, "padding_mask": MASK})["logits_per_image"])
    assert float(tape.gradient(loss, model.logit_scale)) != 0.0

    # An optimizer step that would carry it past log(100) leaves it at log(100) (CLIP's clamp) ...
    optimizer = keras.optimizers.SGD(learning_rate=1.0)
    optimizer.apply_gradients([(tf.constant(-10.0), model.logit_scale)])
    np.testing.assert_allclose(float(to_np(model.logit_scale)), math.log(100), rtol=1e-6)
    # ... and a value set above it scales by at most 100 (or below 0, by at least 1).
    model.logit_scale.assign(10.0)
    np.testing.assert_allclose(float(to_np(model.scale())), 100.0, rtol=1e-5)
    model.logit_scale.assign(-3.0)
    np.testing.assert_allclose(float(to_np(model.scale())), 1.0, rtol=1e-6)
    assert LogitScaleClip(0.0, 1.0).get_config() == {"min_value": 0.0, "max_value": 1.0}

    capped = _clip(temperature=0.5, max_logit_scale=10.0)
    capped({"images": IMAGES, "token_ids": TOKENS})
    np.testing.assert_allclose(float(to_np(capped.scale())), 2.0, rtol=1e-6)


# --- training -----------------------------------------------------------------------------------

COLOURS = {2: (1.0, 0.1, 0.1), 3: (0.1, 1.0, 0.1), 4: (0.1, 0.1, 1.0), 5: (1.0, 1.0, 0.1)}  # red green blue yellow
CORNERS = {6: (1, 1), 7: (9, 9)}  # top-left, bottom-right: the square's first row and column
SQUARE = 1  # the word "square", in every other caption so captions differ in length


def _square_pairs():
    """8 pairs: a 6x6 square of one of 4 colours in one of 2 corners; the caption names both, then EOT."""
    images, tokens, masks = [], [], []
    for i, (colour, corner) in enumerate((c, p) for c in COLOURS for p in CORNERS):
        image = np.full(IMAGE_SHAPE, 0.05, "float32")
        row, col = CORNERS[corner]
        image[row:row + 6, col:col + 6] = COLOURS[colour]
        words = [colour, SQUARE, corner] if i % 2 else [colour, corner]
        ids = words + [EOT]
        images.append(image)
        tokens.append(ids + [0] * (SEQ - len(ids)))
        masks.append([1] * len(ids) + [0] * (SEQ - len(ids)))
    return np.stack(images), np.array(tokens, "int32"), np.array(masks, "int32")


def test_tiny_clip_learns_to_match_eight_coloured_squares_with_their_captions():
    keras.utils.set_random_seed(21)
    images, tokens, masks = _square_pairs()
    model = clip_model(IMAGE_SHAPE, PATCH, VOCAB, SEQ, embed_dim=16, hidden_dim=16, num_layers=1, num_heads=2,
                       intermediate_dim=32)
    model.compile(keras.optimizers.Adam(3e-3), loss={"logits_per_image": CLIPLoss()})
    inputs = {"images": images, "token_ids": tokens, "padding_mask": masks}
    history = model.fit(inputs, {"logits_per_image": np.zeros(8, "float32")}, batch_size=8, epochs=150, verbose=0)
    logits = to_np(model(inputs)["logits_per_image"])
    recall = float(np.mean(np.argmax(logits, axis=1) == np.arange(8)))
    text_recall = float(np.mean(np.argmax(logits, axis=0) == np.arange(8)))
    losses = history.history["loss"]
    print(f"CLIP on 8 squares: loss {losses[0]:.3f} -> {losses[-1]:.3f}, image-to-text recall@1 {recall:.3f}, "
          f"text-to-image {text_recall:.3f}, scale {float(to_np(model.scale())):.2f}")
    assert recall >= 0.75
    assert losses[-1] < 0.5 * losses[0]


# --- errors -------------------------------------------------------------------------------------


def test_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        CLIPTextEncoder(VOCAB, SEQ, 1, 3, HIDDEN, FF, EMBED)
    with pytest.raises(ValueError, match="activation must be one of"):
        CLIPTextEncoder(VOCAB, SEQ, 1, HEADS, HIDDEN, FF, EMBED, activation="relu")
    text = _text_encoder()
    with pytest.raises(ValueError, match="dict with 'token_ids'"):
        text({"ids": TOKENS})
    with pytest.raises(ValueError, match="rank 2"):
        text({"token_ids": TOKENS[0]})
    with pytest.raises(ValueError, match="padding_mask must have the shape of token_ids"):
        text({"token_ids": TOKENS, "padding_mask": MASK[:, :3]})
    with pytest.raises(ValueError, match=f"LearnedPositionEmbedding has {SEQ} positions"):
        text({"token_ids": np.ones((1, SEQ + 1), "int32")})

    with pytest.raises(ValueError, match="needs a VisionTransformer or a Keras image model"):
        CLIPImageEncoder("vit", EMBED)
    image = CLIPImageEncoder(_vit(), EMBED)
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        image(IMAGES[0])
    inputs = keras.Input(IMAGE_SHAPE)
    no_pool = keras.Model(inputs, {"features": keras.layers.GlobalAveragePooling2D()(inputs)})
    with pytest.raises(ValueError, match="without 'pooled_output'"):
        CLIPImageEncoder(no_pool, EMBED)(IMAGES)
    spatial = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="backbone output expected inputs of rank 2"):
        CLIPImageEncoder(spatial, EMBED)(IMAGES)

    with pytest.raises(ValueError, match="different widths"):
        CLIP(CLIPImageEncoder(_vit(), EMBED), CLIPTextEncoder(VOCAB, SEQ, 1, HEADS, HIDDEN, FF, EMBED + 1))
    with pytest.raises(ValueError, match="needs a CLIPTextEncoder"):
        CLIP(CLIPImageEncoder(_vit(), EMBED), keras.layers.Dense(3))
    with pytest.raises(ValueError, match="needs a CLIPImageEncoder"):
        CLIP(_vit(), _text_encoder())
    with pytest.raises(ValueError, match="max_logit_scale must be >= 1"):
        _clip(max_logit_scale=0.5)
    with pytest.raises(ValueError, match="CLIP expects a dict with 'images'"):
        _clip()({"images": IMAGES})


def test_l2_normalize_gives_unit_rows_and_keeps_zero():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], "float32")
    np.testing.assert_allclose(to_np(l2_normalize(x)), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)

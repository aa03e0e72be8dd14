"""DETR (layers/detr.py): the layer contract of the model and its parts, each against a stated reference.

References:

* the 2-D sine encoding: NumPy written the way DETR's ``PositionEmbeddingSine``
  is (cumulative coordinates, ``dim_t``, sines of the even and cosines of the
  odd features stacked and flattened, rows then columns);
* the encoder and decoder layers: ``keras.layers.MultiHeadAttention`` with
  our attention weights copied (called with ``query = x + P``, ``key = x + P``,
  ``value = x``), NumPy layer norm and ReLU FFN; without positions, our
  chapter-5 parent layers with the same weights;
* the backbone: shapes and the output stride;
* the model: NumPy of the two heads (``h W_c + b_c``; ``sigmoid`` of the
  3-layer ReLU MLP) on the decoder output ``h`` the model exposes, plus output
  shapes, boxes in ``[0, 1]`` and finite logits.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.cnn_models import resnet18
from layers.detr import DETR, DETRBackbone, DETRDecoderLayer, DETREncoderLayer, SinePositionEncoding2D, detr
from layers.transformer import TransformerDecoderLayer, TransformerEncoderLayer
from tests.layer_harness import run_layer_contract, seeded_array

# The tiny model: 32x32x3 images, backbone stride 8 (4x4 = 16 tokens), width 16, 2 heads, 1 + 1 layers, 5 queries.
B, IMAGE, HIDDEN, HEADS, FF, QUERIES, CLASSES = 2, (32, 32, 3), 16, 2, 32, 5, 3
IMAGES = np.random.default_rng(0).uniform(0, 1, (B, *IMAGE)).astype("float32")


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def tiny_detr(**kwargs):
    args = dict(num_queries=QUERIES, hidden_dim=HIDDEN, num_heads=HEADS, num_encoder_layers=1,
                num_decoder_layers=1, intermediate_dim=FF, dropout=0.0)
    args.update(kwargs)
    return DETR(DETRBackbone((8, 16), blocks_per_stage=1), CLASSES, **args)


# --- Position encoding ----------------------------------------------------------------------------------------

def np_detr_sine(height, width, d_model, temperature=10000.0, scale=2 * math.pi, eps=1e-6):
    """DETR's PositionEmbeddingSine(num_pos_feats=d/2, normalize=True) on an all-valid mask, (H, W, d)."""
    features = d_model // 2
    y_embed = np.cumsum(np.ones((height, width)), axis=0)
    x_embed = np.cumsum(np.ones((height, width)), axis=1)
    y_embed = y_embed / (y_embed[-1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, -1:] + eps) * scale
    dim_t = temperature ** (2 * (np.arange(features) // 2) / features)
    pos_x, pos_y = x_embed[..., None] / dim_t, y_embed[..., None] / dim_t
    pos_x = np.stack([np.sin(pos_x[..., 0::2]), np.cos(pos_x[..., 1::2])], axis=3).reshape(height, width, -1)
    pos_y = np.stack([np.sin(pos_y[..., 0::2]), np.cos(pos_y[..., 1::2])], axis=3).reshape(height, width, -1)
    return np.concatenate([pos_y, pos_x], axis=-1)


def test_sine_position_encoding_contract_against_detr_formula():
    x = seeded_array(2, 3, 5, 16, seed=1)
    run_layer_contract(SinePositionEncoding2D, x, expected_output_shape=(2, 3, 5, 16),
                       reference=lambda x: np.broadcast_to(np_detr_sine(3, 5, 16), x.shape), atol=1e-5)
    # Unnormalised: plain coordinates 1..H and 1..W; another size and temperature.
    layer = SinePositionEncoding2D(temperature=100.0, normalize=False)
    out = to_np(layer(np.zeros((1, 4, 2, 8), "float32")))[0]
    freq = 1.0 / 100.0 ** (2 * (np.arange(4) // 2) / 4)

    def sinusoids(length):  # section 5.2: sin on even, cos on odd features, of positions 1..length
        angles = np.arange(1, length + 1)[:, None] * freq
        return np.where(np.arange(4) % 2 == 0, np.sin(angles), np.cos(angles))

    np.testing.assert_allclose(out[:, 0, :4], sinusoids(4), atol=1e-6)  # rows: first half of the channels
    np.testing.assert_allclose(out[2, :, 4:], sinusoids(2), atol=1e-6)  # columns: second half
    with pytest.raises(ValueError, match="even d_model"):
        SinePositionEncoding2D()(np.zeros((1, 2, 2, 5), "float32"))
    with pytest.raises(ValueError, match="rank 4"):
        SinePositionEncoding2D()(np.zeros((1, 2, 6), "float32"))


# --- Encoder and decoder layers -------------------------------------------------------------------------------

def np_layer_norm(x, layer):
    gamma, beta = (to_np(w) for w in layer.weights)
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + layer.epsilon) * gamma + beta


def np_feedforward(x, layer):
    w1, b1, w2, b2 = (to_np(w) for w in layer.weights)
    return np.maximum(x @ w1 + b1, 0) @ w2 + b2


def keras_attention(ours, query, value, key):
    """``keras.layers.MultiHeadAttention`` with our attention's weights, on separate query, value and key."""
    theirs = keras.layers.MultiHeadAttention(ours.num_heads, ours.key_dim)
    theirs(query, value, key)
    theirs.set_weights(ours.get_weights())
    return to_np(theirs(query, value, key))


def with_random_biases(layer):
    for variable in layer.weights:
        if "bias" in variable.path or "beta" in variable.path:
            variable.assign(seeded_array(*variable.shape, seed=len(variable.path), scale=0.1))
    return layer


X = seeded_array(B, 6, HIDDEN, seed=2)
POSITION = seeded_array(1, 6, HIDDEN, seed=3)
TARGET = seeded_array(B, QUERIES, HIDDEN, seed=4)
QUERY_POSITION = seeded_array(1, QUERIES, HIDDEN, seed=5)


def test_encoder_layer_adds_positions_to_queries_and_keys_only():
    def reference(layer, x):
        attended = keras_attention(layer.self_attention, x + POSITION, x, x + POSITION)
        y = np_layer_norm(x + attended, layer.self_attention_layer_norm)
        return np_layer_norm(y + np_feedforward(y, layer.feedforward), layer.feedforward_layer_norm)

    report = run_layer_contract(lambda: DETREncoderLayer(FF, HEADS), X, expected_output_shape=(B, 6, HIDDEN),
                                call_kwargs={"position": POSITION}, reference=reference, reference_uses_layer=True,
                                atol=1e-4, rtol=1e-4)
    layer = with_random_biases(report.layer)
    parent = TransformerEncoderLayer(FF, HEADS)
    parent(X)
    parent.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(layer(X)), to_np(parent(X)), atol=1e-6)  # no positions: the parent layer
    # Positions on the values too (added to the input once) is another function.
    assert np.abs(to_np(layer(X, position=POSITION)) - to_np(parent(X + POSITION))).max() > 1e-2


def test_decoder_layer_adds_object_queries_and_image_positions_like_detr():
    memory = X

    def reference(layer, target, memory):
        q = target + QUERY_POSITION
        t = np_layer_norm(target + keras_attention(layer.self_attention, q, target, q), layer.self_attention_layer_norm)
        attended = keras_attention(layer.cross_attention, t + QUERY_POSITION, memory, memory + POSITION)
        t = np_layer_norm(t + attended, layer.cross_attention_layer_norm)
        return np_layer_norm(t + np_feedforward(t, layer.feedforward), layer.feedforward_layer_norm)

    report = run_layer_contract(
        lambda: DETRDecoderLayer(FF, HEADS), [TARGET, memory], expected_output_shape=(B, QUERIES, HIDDEN),
        call_kwargs={"query_position": QUERY_POSITION, "memory_position": POSITION}, reference=reference,
        reference_uses_layer=True, atol=1e-4, rtol=1e-4,
    )
    layer = with_random_biases(report.layer)
    parent = TransformerDecoderLayer(FF, HEADS)
    parent([TARGET, memory])
    parent.set_weights(layer.get_weights())
    np.testing.assert_allclose(to_np(layer([TARGET, memory])),
                               to_np(parent([TARGET, memory], use_causal_mask=False)), atol=1e-6)
    with pytest.raises(ValueError, match=r"\[target \(batch, Q, d\), memory"):
        DETRDecoderLayer(FF, HEADS)(TARGET)


# --- Backbone and model ---------------------------------------------------------------------------------------

def test_backbone_has_stride_two_to_the_stages_plus_one():
    backbone = DETRBackbone((4, 8, 8), blocks_per_stage=2)
    assert backbone.stride == 16
    assert tuple(backbone(np.zeros((1, 48, 40, 3), "float32")).shape) == (1, 3, 3, 8)
    assert len(backbone.blocks) == 6 and backbone.compute_output_shape((None, 33, 64, 3)) == (None, 3, 4, 8)
    with pytest.raises(ValueError, match="positive integer"):
        DETRBackbone((8, 0))


def np_heads(model, hidden):
    """``logits = h W_c + b_c``; ``boxes = sigmoid(relu(relu(h W_0 + b_0) W_1 + b_1) W_2 + b_2)``."""
    kernel, bias = (to_np(w) for w in model.class_head.weights)
    x = hidden
    for i, layer in enumerate(model.box_head):
        w, b = (to_np(v) for v in layer.weights)
        x = x @ w + b
        x = np.maximum(x, 0) if i < 2 else 1 / (1 + np.exp(-x))
    return {"boxes": x, "logits": hidden @ kernel + bias}


def test_detr_contract_heads_against_numpy_boxes_in_unit_square():
    def reference(model, images):
        return np_heads(model, to_np(model.decode(images)))

    # Gradients are checked below: the first decoder layer's self-attention has dead query/key weights.
    report = run_layer_contract(tiny_detr, IMAGES, expected_output_shape=[(B, QUERIES, 4), (B, QUERIES, CLASSES + 1)],
                                reference=reference, reference_uses_layer=True, atol=1e-5, check_gradients=False)
    boxes, logits = report.outputs["boxes"], report.outputs["logits"]
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0 and np.isfinite(logits).all()
    assert np.abs(boxes[0] - boxes[1]).max() > 1e-4  # the two images give different boxes
    assert np.abs(boxes[:, 0] - boxes[:, 1]).max() > 1e-4  # and the queries differ from each other


def test_gradients_reach_every_weight_except_the_first_decoder_self_attention_scores():
    model = tiny_detr()
    model(IMAGES)
    with_random_biases(model)  # zero biases would add dead weights of their own (e.g. LN(0) has no gamma gradient)
    with tf.GradientTape() as tape:
        out = model(tf.constant(IMAGES), training=True)
        loss = sum(tf.reduce_sum(out[key] * tf.random.stateless_normal(tf.shape(out[key]), seed=[7, i]))
                   for i, key in enumerate(("boxes", "logits")))
    gradients = tape.gradient(loss, model.trainable_weights)
    # DETR's decoder input starts at zero, so layer 0's self-attention averages equal values: its query and
    # key projections cannot change the output and its value kernel multiplies zeros. Key biases never matter
    # (a constant shift of all the scores of a query).
    dead = tuple(f"decoder_layer_0/self_attention/{name}" for name in
                 ("query_kernel", "query_bias", "key_kernel", "value_kernel")) + ("/key_bias",)
    for weight, gradient in zip(model.trainable_weights, gradients):
        assert gradient is not None, weight.path
        g = np.abs(tf.convert_to_tensor(gradient).numpy())
        assert np.isfinite(g).all(), weight.path
        if any(part in weight.path for part in dead):
            assert g.max() < 1e-4, (weight.path, g.max())
        else:
            assert g.max() > 1e-4, (weight.path, g.max())


def test_detr_takes_a_chapter_2_resnet_and_round_trips_a_builder_model(tmp_path):
    backbone = resnet18((32, 32, 3), width=4, small_input=True, include_top=False)
    model = DETR(backbone, CLASSES, num_queries=3, hidden_dim=8, num_heads=2, num_encoder_layers=1,
                 num_decoder_layers=1, intermediate_dim=16)
    out = model(IMAGES)
    assert tuple(out["logits"].shape) == (B, 3, CLASSES + 1) and tuple(out["boxes"].shape) == (B, 3, 4)
    built = detr(CLASSES, backbone_filters=(8, 16), blocks_per_stage=1, num_queries=QUERIES, hidden_dim=HIDDEN,
                 num_heads=HEADS, num_encoder_layers=1, num_decoder_layers=2, intermediate_dim=FF, normalize_first=True)
    expected = built(IMAGES)
    assert built.encoder_layer_norm is not None and tiny_detr().encoder_layer_norm is None
    built.save(tmp_path / "detr.keras")
    again = keras.saving.load_model(tmp_path / "detr.keras")
    for key, value in again(IMAGES).items():
        np.testing.assert_allclose(to_np(value), to_np(expected[key]), atol=1e-6)


def test_bad_arguments_and_inputs_get_clear_errors():
    backbone = DETRBackbone((8,), 1)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        DETR(backbone, 3, hidden_dim=18, num_heads=4)
    with pytest.raises(ValueError, match="must be even"):
        DETR(backbone, 3, hidden_dim=9, num_heads=1)
    with pytest.raises(ValueError, match="needs a Keras layer or model as backbone"):
        DETR("resnet", 3)
    with pytest.raises(ValueError, match="num_queries must be a positive integer"):
        DETR(backbone, 3, num_queries=0)
    model = tiny_detr()
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        model(IMAGES[0])
    flat = DETR(keras.layers.GlobalAveragePooling2D(), 3, num_queries=2, hidden_dim=8, num_heads=2,
                num_encoder_layers=1, num_decoder_layers=1, intermediate_dim=8)
    with pytest.raises(ValueError, match="backbone output expected inputs of rank 4"):
        flat.build((None, 16, 16, 3))

"""ViT (layers/vision_transformer.py): the layer contract, keras-hub parity with copied weights, position interpolation.

References:

* patch embedding: NumPy, each ``P x P`` patch cut out by slicing and
  multiplied by the flattened kernel (``x_p E + b``); the conv and reshape
  forms against each other;
* ``z_0``: NumPy of ``[x_class; x_p E] + E_pos``;
* the position grid at another image size: a NumPy bilinear resize
  (half-pixel centres, edges clamped) and ``tf.image.resize(method="bicubic")``;
* the backbone: ``keras_hub.models.ViTBackbone`` with its (randomised) weights
  copied into ours by ``load_keras_hub_vit``, hidden states to 1e-5;
* the classifier: NumPy of the head ``y W + b`` on our backbone's class token.
"""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from layers.vision_transformer import (
    PatchEmbedding, ViTClassifier, ViTEmbeddings, VisionTransformer, load_keras_hub_vit, vit_classifier,
)
from tests.layer_harness import run_layer_contract, seeded_array

B = 2
# keras-hub parity configuration: 16x16x3 images, 4x4 patches (16 + 1 tokens), 2 layers, width 32, 2 heads, MLP 64.
IMAGE_SHAPE, PATCH, LAYERS, HEADS, HIDDEN, MLP = (16, 16, 3), 4, 2, 2, 32, 64
IMAGES = seeded_array(B, *IMAGE_SHAPE, seed=1)


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def np_patch_embedding(images, kernel, bias):
    """``x_p^i E + b`` for each patch, cut out by slicing, row-major over the grid."""
    p_h, p_w = kernel.shape[:2]
    rows, cols = images.shape[1] // p_h, images.shape[2] // p_w
    flat = kernel.reshape(-1, kernel.shape[-1])
    out = [
        images[:, i * p_h:(i + 1) * p_h, j * p_w:(j + 1) * p_w, :].reshape(len(images), -1) @ flat + bias
        for i in range(rows) for j in range(cols)
    ]
    return np.stack(out, axis=1)


def np_resize_bilinear(grid, rows, cols):
    """Bilinear resize of ``(h, w, d)`` with half-pixel centres and clamped edges (TF's and PyTorch's
    ``align_corners=False`` convention), one axis at a time."""

    def along(x, axis, size):
        n = x.shape[axis]
        source = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
        low = np.floor(source).astype(int)
        high = np.minimum(low + 1, n - 1)
        weight = (source - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
        return np.take(x, low, axis=axis) * (1 - weight) + np.take(x, high, axis=axis) * weight

    return along(along(grid, 0, rows), 1, cols)


# --- PatchEmbedding ---------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["conv", "reshape"])
def test_vit_patch_embedding_contract_against_sliced_patches(method):
    images = seeded_array(B, 8, 12, 3, seed=2)
    run_layer_contract(
        lambda: PatchEmbedding(16, patch_size=(4, 3), method=method, bias_initializer="random_normal"),
        images,
        expected_output_shape=(B, 2 * 4, 16),
        reference=lambda layer, x: np_patch_embedding(x, to_np(layer.kernel), to_np(layer.bias)),
        reference_uses_layer=True,
    )


@pytest.mark.parametrize("shape, patch", [((B, 16, 16, 3), 4), ((B, 28, 28, 1), 7), ((B, 28, 28, 1), 4)])
def test_vit_conv_and_reshape_patch_forms_agree_for_the_same_weights(shape, patch):
    images = seeded_array(*shape, seed=3)
    conv = PatchEmbedding(24, patch, method="conv", bias_initializer="random_normal")
    reshape = PatchEmbedding(24, patch, method="reshape")
    conv.build(shape)
    reshape.build(shape)
    reshape.set_weights(conv.get_weights())
    np.testing.assert_allclose(to_np(reshape(images)), to_np(conv(images)), atol=1e-5, rtol=1e-5)
    # The same function, so the same gradient reaches the shared kernel.
    gradients = []
    for layer in (conv, reshape):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(images) * seeded_array(*layer(images).shape, seed=4))
        gradients.append(tape.gradient(loss, layer.kernel).numpy())
    np.testing.assert_allclose(gradients[1], gradients[0], atol=1e-4, rtol=1e-5)


def test_vit_patch_embedding_errors_are_clear():
    layer = PatchEmbedding(8, 4)
    with pytest.raises(ValueError, match=r"image size 10x16 is not divisible by patch_size 4x4"):
        layer(np.zeros((1, 10, 16, 3), "float32"))
    with pytest.raises(ValueError, match=r"rank 4 \(batch, height, width, channels\)"):
        layer(np.zeros((16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="method must be one of"):
        PatchEmbedding(8, 4, method="unfold")
    layer(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="built for 3 channels"):
        layer(np.zeros((1, 8, 8, 1), "float32"))
    with pytest.raises(ValueError, match="not divisible"):
        layer(np.zeros((1, 8, 6, 3), "float32"))


# --- ViTEmbeddings and the position grid -----------------------------------------------------


def test_vit_embeddings_contract_class_token_first_and_positions_added():
    images = seeded_array(B, 8, 12, 3, seed=5)

    def make():
        layer = ViTEmbeddings(16, 4)
        layer.build(images.shape)
        layer.class_token.assign(seeded_array(16, seed=6))  # non-zero, so a misplaced token cannot hide
        return layer

    def reference(layer, x):
        patches = np_patch_embedding(x, *(to_np(w) for w in layer.patch_embedding.weights))
        token = np.broadcast_to(to_np(layer.class_token), (len(x), 1, 16))
        return np.concatenate([token, patches], axis=1) + to_np(layer.position_embeddings)

    report = run_layer_contract(make, images, expected_output_shape=(B, 1 + 6, 16), reference=reference,
                                reference_uses_layer=True)
    assert report.layer.image_size == (8, 12) and report.layer.grid_size == (2, 3)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_vit_built_at_32x32_runs_at_48x48_with_the_position_grid_resized(interpolation):
    keras.utils.set_random_seed(7)
    model = VisionTransformer((32, 32, 3), 4, num_layers=1, num_heads=2, hidden_dim=8, mlp_dim=16,
                              interpolation=interpolation)
    model.build()
    embeddings = model.embeddings
    table = to_np(embeddings.position_embeddings)
    assert table.shape == (1 + 8 * 8, 8)
    assert embeddings.position_table((8, 8)) is embeddings.position_embeddings  # native size: the weight itself

    large = seeded_array(B, 48, 48, 3, seed=8)
    out = model(large)
    assert out["sequence_output"].shape == (B, 1 + 12 * 12, 8) and out["pooled_output"].shape == (B, 8)

    grid = table[1:].reshape(8, 8, 8)
    for rows, cols in ((12, 12), (8, 12), (6, 10)):
        if interpolation == "bilinear":
            expected = np_resize_bilinear(grid, rows, cols)
        else:
            expected = tf.image.resize(grid[None], (rows, cols), method="bicubic").numpy()[0]
        resized = to_np(embeddings.position_table((rows, cols)))
        np.testing.assert_array_equal(resized[0], table[0])  # the class token's position is kept
        np.testing.assert_allclose(resized[1:], expected.reshape(rows * cols, 8), atol=1e-6)

    # z_0 at 48x48 uses the resized table.
    z0 = to_np(embeddings(large))
    patches = np_patch_embedding(large, *(to_np(w) for w in embeddings.patch_embedding.weights))
    token = np.broadcast_to(to_np(embeddings.class_token), (B, 1, 8))
    expected = np.concatenate([token, patches], 1) + to_np(embeddings.position_table((12, 12)))
    np.testing.assert_allclose(z0, expected, atol=1e-5)


# --- VisionTransformer: keras-hub parity ------------------------------------------------------


def _hub_backbone(**overrides):
    config = dict(image_shape=IMAGE_SHAPE, patch_size=PATCH, num_layers=LAYERS, num_heads=HEADS, hidden_dim=HIDDEN,
                  mlp_dim=MLP)
    return keras_hub.models.ViTBackbone(**{**config, **overrides})


def _ours(**kwargs):
    return VisionTransformer(IMAGE_SHAPE, PATCH, LAYERS, HEADS, HIDDEN, MLP, **kwargs)


@pytest.fixture(scope="module")
def hub():
    """A tiny keras-hub ViT with every weight randomised (biases, LN offsets and the class token too)."""
    keras.utils.set_random_seed(11)
    theirs = _hub_backbone()
    for i, variable in enumerate(theirs.weights):
        noise = seeded_array(*variable.shape, seed=100 + i, scale=0.1)
        if variable.path.endswith("gamma"):
            variable.assign(1.0 + noise)
        elif "kernel" not in variable.path:
            variable.assign(noise * 5 if "position" in variable.path or "class" in variable.path else noise)
    return theirs


def test_vit_backbone_contract_with_keras_hub_vit_backbone_reference(hub):
    source = load_keras_hub_vit(_ours(), hub)

    def make():
        model = _ours()
        model.build()
        model.set_weights(source.get_weights())
        return model

    def reference(images):
        sequence = to_np(hub(images))
        return {"pooled_output": sequence[:, 0], "sequence_output": sequence}

    report = run_layer_contract(make, IMAGES, expected_output_shape=[(B, HIDDEN), (B, 1 + 16, HIDDEN)],
                                reference=reference, atol=1e-5)
    difference = np.abs(report.outputs["sequence_output"] - reference(IMAGES)["sequence_output"]).max()
    print(f"keras-hub ViTBackbone parity: max |difference| = {difference:.3g}")
    assert difference < 1e-5


def test_vit_reshape_patch_form_matches_keras_hub_too(hub):
    ours = load_keras_hub_vit(_ours(method="reshape"), hub)
    np.testing.assert_allclose(to_np(ours(IMAGES)["sequence_output"]), to_np(hub(IMAGES)), atol=1e-5, rtol=1e-5)


def test_load_keras_hub_vit_refuses_a_different_model(hub):
    with pytest.raises(ValueError, match=r"hidden_dim \(keras-hub 32, ours 16\)"):
        load_keras_hub_vit(VisionTransformer(IMAGE_SHAPE, PATCH, LAYERS, HEADS, 16, MLP), hub)
    with pytest.raises(ValueError, match="layer_norm_epsilon"):
        load_keras_hub_vit(_ours(layer_norm_epsilon=1e-12), hub)
    with pytest.raises(ValueError, match="exact GELU"):
        load_keras_hub_vit(_ours(activation="gelu"), hub)
    with pytest.raises(ValueError, match="use_class_token"):
        load_keras_hub_vit(_ours(), _hub_backbone(use_class_token=False))


# --- ViTClassifier ----------------------------------------------------------------------------


def test_vit_classifier_contract_on_fashion_mnist_sized_images():
    images = seeded_array(B, 28, 28, 1, seed=12)

    def make():
        return vit_classifier(num_classes=10, patch_size=7, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                              dropout=0.0)

    def reference(layer, x):
        pooled = to_np(layer.backbone(x)["pooled_output"])
        return pooled @ to_np(layer.head.kernel) + to_np(layer.head.bias)

    report = run_layer_contract(make, images, expected_output_shape=(B, 10), reference=reference,
                                reference_uses_layer=True)
    assert report.layer.backbone.embeddings.grid_size == (4, 4)
    fine = vit_classifier(patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    assert fine.backbone(images)["sequence_output"].shape == (B, 1 + 49, 16)


def test_vit_classifier_overfits_a_tiny_batch():
    keras.utils.set_random_seed(13)
    images = np.random.default_rng(14).uniform(size=(8, 28, 28, 1)).astype("float32")
    labels = np.arange(8) % 4
    model = vit_classifier(num_classes=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32, dropout=0.0)
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    history = model.fit(images, labels, batch_size=8, epochs=60, verbose=0)
    assert history.history["loss"][-1] < 0.2 * history.history["loss"][0]
    assert history.history["accuracy"][-1] == 1.0


def test_vit_bad_arguments_and_inputs_get_clear_errors():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        VisionTransformer(IMAGE_SHAPE, PATCH, 1, 3, HIDDEN, MLP)
    with pytest.raises(ValueError, match=r"image size 30x30 is not divisible by patch_size 4x4"):
        VisionTransformer((30, 30, 3), PATCH, 1, HEADS, HIDDEN, MLP)
    with pytest.raises(ValueError, match="interpolation must be one of"):
        _ours(interpolation="nearest")
    with pytest.raises(ValueError, match="activation must be one of"):
        _ours(activation="relu")
    model = _ours()
    with pytest.raises(ValueError, match="made for 3 channels"):
        model(np.zeros((1, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="rank 4"):
        model(np.zeros((16, 16, 3), "float32"))
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        model(np.zeros((1, 18, 16, 3), "float32"))
    with pytest.raises(ValueError, match="needs a VisionTransformer"):
        ViTClassifier(keras.layers.Dense(3), 10)

import keras
import numpy as np
import pytest

from apps.transfer_learning import (
    InferenceModeBackbone,
    backbone_blocks,
    classification_head,
    feature_extractor,
    fine_tune,
)
from layers.activations import ReLU
from layers.cnn_blocks import BasicBlock
from layers.cnn_models import resnet18
from layers.convolution import Conv2D
from layers.normalization import BatchNormalization
from layers.perceptron import Dense
from tests.layer_harness import run_layer_contract

SIZE = 16
_YY, _XX = np.mgrid[0:SIZE, 0:SIZE].astype("float32")


def stripes(rng, theta, freq):
    """Noisy sinusoidal stripes: orientation ``theta``, ``freq`` cycles per image."""
    n = len(theta)
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    wave = _XX * np.cos(theta)[:, None, None] + _YY * np.sin(theta)[:, None, None]
    img = np.sin(2 * np.pi * freq[:, None, None] * wave / SIZE + phase)
    img += 0.3 * rng.standard_normal(img.shape)
    return img[..., None].astype("float32")


def orientation_task(rng, n):
    """Source task: which of 4 orientations (random frequency)."""
    y = rng.integers(0, 4, n)
    theta = np.array([0.0, np.pi / 2, np.pi / 4, 3 * np.pi / 4])[y]
    return stripes(rng, theta, rng.uniform(2.0, 5.0, n)), y


def frequency_task(rng, n):
    """Related target task: the same kind of images, classed by stripe frequency."""
    y = rng.integers(0, 3, n)
    freq = np.array([1.5, 3.0, 4.5])[y] + rng.uniform(-0.4, 0.4, n)
    return stripes(rng, rng.uniform(0.0, np.pi, n), freq), y


def tiny_backbone():
    """Stem (conv, BN) + three basic residual blocks: five weighted units."""
    inputs = keras.Input((SIZE, SIZE, 1))
    x = Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = BatchNormalization(name="stem_bn")(x)
    x = ReLU(name="stem_relu")(x)
    x = BasicBlock(8, use_bias=False, name="block1")(x)
    x = BasicBlock(16, strides=2, use_bias=False, name="block2")(x)
    x = BasicBlock(32, strides=2, use_bias=False, name="block3")(x)
    return keras.Model(inputs, x, name="tiny_resnet")


def snapshot(layers):
    return [w.numpy().copy() for layer in layers for w in layer.weights]


def head_layers(model):
    return [l for l in model.layers if l.weights and not isinstance(l, InferenceModeBackbone)]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_feature_extraction_trains_head_and_keeps_backbone_bit_identical():
    rng = np.random.default_rng(0)
    x, y = frequency_task(rng, 64)
    backbone = tiny_backbone()
    model = feature_extractor(backbone, num_classes=3, learning_rate=1e-2)
    head = head_layers(model)
    assert not backbone.trainable
    assert {id(w) for w in model.trainable_weights} == {id(w) for h in head for w in h.weights}

    backbone_before, head_before = snapshot([backbone]), snapshot(head)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    # Every backbone weight, BN moving statistics included (inference mode), is unchanged.
    assert same(snapshot([backbone]), backbone_before)
    assert not any(np.array_equal(a, b) for a, b in zip(snapshot(head), head_before))
    # Inference-mode BN inside the model: training=True gives the same outputs.
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x[:4], training=True)),
        keras.ops.convert_to_numpy(model(x[:4], training=False)),
        atol=1e-6,
    )


@pytest.mark.parametrize("n", [0, 2, 5])
def test_fine_tune_unfreezes_exactly_the_top_n_blocks(n):
    rng = np.random.default_rng(1)
    x, y = frequency_task(rng, 32)
    backbone = tiny_backbone()
    model = feature_extractor(backbone, num_classes=3)
    blocks = backbone_blocks(backbone)
    assert [b.name for b in blocks] == ["stem_conv", "stem_bn", "block1", "block2", "block3"]

    fine_tune(model, backbone, n, learning_rate=1e-3)
    assert [b.trainable for b in blocks] == [False] * (5 - n) + [True] * n
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-3)
    top, bottom = blocks[5 - n :], blocks[: 5 - n]
    head = head_layers(model)
    expected = {id(w) for layer in top + head for w in layer.trainable_weights}
    assert {id(w) for w in model.trainable_weights} == expected

    bottom_before = snapshot(bottom)
    top_trainable_before = [w.numpy().copy() for b in top for w in b.trainable_weights]
    top_stats_before = [w.numpy().copy() for b in top for w in b.non_trainable_weights]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert same(snapshot(bottom), bottom_before)
    top_trainable_after = [w.numpy() for b in top for w in b.trainable_weights]
    assert not any(np.array_equal(a, b) for a, b in zip(top_trainable_after, top_trainable_before))
    # Unfrozen blocks still run their batch norms in inference mode.
    assert same([w.numpy() for b in top for w in b.non_trainable_weights], top_stats_before)


def test_fine_tuning_beats_feature_extraction_on_a_related_task():
    rng = np.random.default_rng(2)
    x_src, y_src = orientation_task(rng, 1024)
    x_new, y_new = frequency_task(rng, 256)
    x_val, y_val = frequency_task(rng, 512)

    # Pretrain the backbone on the source task (orientation).
    backbone = tiny_backbone()
    pretrain = keras.Model(backbone.input, classification_head(backbone.output, 4))
    pretrain.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    pretrain.fit(x_src, y_src, batch_size=32, epochs=6, verbose=0)
    assert pretrain.evaluate(x_src[:256], y_src[:256], verbose=0)[1] > 0.9

    # Feature extraction, then two branches from the same weights for the same steps:
    # keep the backbone frozen, or fine-tune it with a lower learning rate.
    model = feature_extractor(backbone, num_classes=3, learning_rate=3e-3)
    model.fit(x_new, y_new, batch_size=32, epochs=15, verbose=0)
    start = model.get_weights()
    model.fit(x_new, y_new, batch_size=32, epochs=10, shuffle=False, verbose=0)
    frozen_loss = model.evaluate(x_val, y_val, verbose=0)[0]

    model.set_weights(start)
    fine_tune(model, backbone, len(backbone_blocks(backbone)), learning_rate=3e-4)
    model.fit(x_new, y_new, batch_size=32, epochs=10, shuffle=False, verbose=0)
    tuned_loss = model.evaluate(x_val, y_val, verbose=0)[0]
    print(f"held-out loss: feature extraction {frozen_loss:.3f}, fine-tuning {tuned_loss:.3f}")
    assert tuned_loss < 0.9 * frozen_loss


def test_inference_mode_backbone_contract():
    x = frequency_task(np.random.default_rng(3), 4)[0]
    report = run_layer_contract(
        lambda: InferenceModeBackbone(tiny_backbone()),
        x,
        expected_output_shape=(4, 4, 4, 32),
        reference=lambda layer, inputs: layer.backbone(inputs, training=False),
        reference_uses_layer=True,
    )
    # The contract's gradient pass ran with training=True: statistics must be untouched.
    stats = report.layer.backbone.non_trainable_weights
    assert len(stats) == 2 * 9  # moving mean and variance of 9 BNs: stem, 2 + 3 + 3 in blocks
    for w in stats:
        initial = 0.0 if w.path.endswith("moving_mean") else 1.0
        assert np.all(w.numpy() == initial), w.path


def test_keras_3_nested_training_false_is_not_enough():
    # Why InferenceModeBackbone exists (keras-team/keras#20285): a functional model called
    # with training=True passes True to a nested model even if the graph says False.
    backbone = tiny_backbone()
    inputs = keras.Input((SIZE, SIZE, 1))
    plain = keras.Model(inputs, backbone(inputs, training=False))
    x = frequency_task(np.random.default_rng(4), 8)[0]
    plain(x, training=True)
    assert np.any(backbone.get_layer("stem_bn").moving_mean.numpy() != 0.0)


def test_transfer_model_keras_file_round_trip(tmp_path):
    x = frequency_task(np.random.default_rng(5), 4)[0]
    backbone = tiny_backbone()
    model = feature_extractor(backbone, num_classes=3)
    fine_tune(model, backbone, 2, learning_rate=1e-4)
    path = str(tmp_path / "transfer.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, compile=False)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-6
    )
    inner = [l for l in reloaded.layers if isinstance(l, InferenceModeBackbone)][0].backbone
    assert [b.trainable for b in backbone_blocks(inner)] == [False, False, False, True, True]


def test_custom_head_builder():
    backbone = tiny_backbone()
    model = feature_extractor(
        backbone, head_builder=lambda f: Dense(2, name="custom")(keras.layers.Flatten()(f))
    )
    assert tuple(model.output.shape) == (None, 2)
    assert [w.path for w in model.trainable_weights] == ["custom/kernel", "custom/bias"]


def test_backbone_blocks_of_a_resnet_builder():
    backbone = resnet18((28, 28, 1), 10, width=4, small_input=True, include_top=False)
    names = [layer.name for layer in backbone_blocks(backbone)]
    blocks = [f"conv{s}_block{b}" for s in (2, 3, 4, 5) for b in (1, 2)]
    assert names == ["conv1_conv", "conv1_bn"] + blocks


def test_feature_extractor_argument_errors():
    backbone = tiny_backbone()
    with pytest.raises(ValueError, match="exactly one of num_classes or head_builder"):
        feature_extractor(backbone)
    with pytest.raises(ValueError, match="exactly one of num_classes or head_builder"):
        feature_extractor(backbone, num_classes=3, head_builder=lambda f: f)
    with pytest.raises(ValueError, match="needs a keras.Model backbone"):
        feature_extractor(BasicBlock(4), num_classes=3)
    with pytest.raises(ValueError, match="needs a built functional backbone"):
        feature_extractor(keras.Sequential([Dense(4)]), num_classes=3)


def test_classification_head_rejects_rank_3_features():
    with pytest.raises(ValueError, match="rank 2 .* or 4 .*got shape \\(None, 5, 7\\)"):
        classification_head(keras.Input((5, 7)), 3)


def test_fine_tune_argument_errors():
    backbone = tiny_backbone()
    model = feature_extractor(backbone, num_classes=3)
    with pytest.raises(ValueError, match=r"in \[0, 5\].*stem_conv, stem_bn, block1, block2, block3"):
        fine_tune(model, backbone, 6)
    with pytest.raises(ValueError, match="must be an integer"):
        fine_tune(model, backbone, 1.5)
    with pytest.raises(ValueError, match="is not part of model"):
        fine_tune(model, tiny_backbone(), 1)

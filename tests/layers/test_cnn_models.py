import keras
import numpy as np
import pytest

from layers.cnn_blocks import BasicBlock, BottleneckBlock, DenseBlock, TransitionLayer, VGGBlock
from layers.cnn_models import CNN_BUILDERS, build_cnn, densenet121, lenet5, resnet18, resnet50, vgg_small
from tests.layer_harness import seeded_array

LOGITS_LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


# --- parameter counts --------------------------------------------------------------------------


def count_224(build):
    # Variables created in a StatelessScope are not initialized (Keras defers it), so
    # 224x224 ImageNet-size models cost no random draws; count_params only needs shapes.
    with keras.StatelessScope():
        return build().count_params()


@pytest.mark.parametrize(
    "name, keras_app",
    [
        ("resnet50", keras.applications.ResNet50),
        ("vgg16", keras.applications.VGG16),
        ("densenet121", keras.applications.DenseNet121),
        ("vgg19", keras.applications.VGG19),
        ("resnet152", keras.applications.ResNet152),
    ],
)
def test_parameter_count_equals_keras_applications(name, keras_app):
    ours = count_224(lambda: build_cnn(name, (224, 224, 3), 1000))
    theirs = count_224(lambda: keras_app(weights=None))
    assert ours == theirs, f"{name}: {ours} parameters, keras.applications has {theirs}"


def conv_params(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


def bn_params(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def pooled(size, window, stride):
    return (size - window) // stride + 1


def test_resnet18_parameter_count_from_formula():
    def bn(c, moving):
        return bn_params(c) if moving else 2 * c

    def basic_block(c_in, c_out, bias, moving):
        n = conv_params(3, c_in, c_out, bias) + bn(c_out, moving)
        n += conv_params(3, c_out, c_out, bias) + bn(c_out, moving)
        if c_in != c_out:  # stride-2 stage entry: 1x1 projection + BN
            n += conv_params(1, c_in, c_out, bias) + bn(c_out, moving)
        return n

    def expected(bias, moving=True, classes=1000):
        n = conv_params(7, 3, 64, bias) + bn(64, moving)
        c_in = 64
        for c in (64, 128, 256, 512):
            n += basic_block(c_in, c, bias, moving) + basic_block(c, c, bias, moving)
            c_in = c
        return n + dense_params(512, classes)

    assert count_224(lambda: resnet18()) == expected(bias=True)
    # The paper's convention (no conv biases; BN moving statistics are not parameters).
    with keras.StatelessScope():
        model = resnet18(use_bias=False)
        assert model.count_params() == expected(bias=False)
        trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == expected(bias=False, moving=False)
    assert trainable == 11_689_512  # torchvision's published resnet18 count, an outside check


def test_alexnet_parameter_count_from_formula():
    size = -(-224 // 4)  # conv1 11x11 stride 4, 'same'
    for _ in range(3):  # three 3x3 stride-2 max-pools
        size = pooled(size, 3, 2)
    assert size == 6  # the paper's 6x6x256 map
    expected = (
        conv_params(11, 3, 96)
        + conv_params(5, 96, 256)
        + conv_params(3, 256, 384)
        + conv_params(3, 384, 384)
        + conv_params(3, 384, 256)
        + dense_params(size * size * 256, 4096)
        + dense_params(4096, 4096)
        + dense_params(4096, 1000)
    )
    assert count_224(lambda: build_cnn("alexnet", (224, 224, 3), 1000)) == expected


@pytest.mark.parametrize("input_shape, padding", [((28, 28, 1), "same"), ((32, 32, 1), "valid")])
def test_lenet5_parameter_count_from_formula(input_shape, padding):
    size = input_shape[0] if padding == "same" else input_shape[0] - 4
    size = pooled(pooled(size, 2, 2) - 4, 2, 2)  # s2, c3 (5x5 valid), s4
    assert size == 5
    expected = (
        conv_params(5, 1, 6)
        + conv_params(5, 6, 16)
        + dense_params(size * size * 16, 120)
        + dense_params(120, 84)
        + dense_params(84, 10)
    )
    model = lenet5(input_shape, 10, first_conv_padding=padding)
    assert model.count_params() == expected
    assert tuple(model.output.shape) == (None, 10)


@pytest.mark.parametrize(
    "width, convs_per_stage, classes", [(16, (1, 2, 2), 10), (24, (1, 2, 2), 10), (8, (2, 3), 5)]
)
def test_vgg_small_parameter_count_from_formula(width, convs_per_stage, classes):
    expected, c_in = 0, 1
    for stage, num_convs in enumerate(convs_per_stage):
        c_out = width * 2**stage
        for _ in range(num_convs):
            expected += conv_params(3, c_in, c_out, bias=False) + bn_params(c_out)
            c_in = c_out
    expected += dense_params(c_in, classes)
    model = vgg_small((28, 28, 1), classes, width=width, convs_per_stage=convs_per_stage)
    assert model.count_params() == expected
    assert tuple(model.output.shape) == (None, classes)


def test_vgg_small_feature_map_and_layers():
    model = vgg_small((28, 28, 1), 10, width=24, include_top=False)
    # 28 -> 14 -> 7 through the two pools; the last stage has 4 * width filters.
    assert tuple(model.output.shape) == (None, 7, 7, 96)
    convs = [layer.name for layer in model.layers if layer.name.endswith(("conv1", "conv2"))]
    assert convs == ["block1_conv1", "block2_conv1", "block2_conv2", "block3_conv1", "block3_conv2"]
    assert tuple(model.get_layer("block2_conv2").output.shape) == (None, 14, 14, 48)
    x = seeded_array(2, 28, 28, 1, seed=6)
    assert tuple(vgg_small()(x).shape) == (2, 10)


# --- numerical parity with keras.applications (copied weights) --------------------------------


def randomize_batch_norms(model, seed):
    """Non-trivial BN statistics, so inference mode is really exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                    (rng.standard_normal(c) * 0.1).astype("float32"),
                    (rng.standard_normal(c) * 0.1).astype("float32"),
                    rng.uniform(0.5, 1.5, c).astype("float32"),
                ]
            )


def copy_from(keras_model, name, target):
    target.set_weights(keras_model.get_layer(name).get_weights())


def assert_same_logits(ours, theirs, x):
    a = keras.ops.convert_to_numpy(ours(x, training=False))
    b = keras.ops.convert_to_numpy(theirs(x, training=False))
    assert np.all(np.isfinite(b))
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_resnet50_equals_keras_resnet50_with_copied_weights():
    shape = (64, 64, 3)
    theirs = keras.applications.ResNet50(weights=None, input_shape=shape, classifier_activation=None)
    randomize_batch_norms(theirs, seed=0)
    ours = resnet50(shape, 1000)
    for name in ("conv1_conv", "conv1_bn", "predictions"):
        copy_from(theirs, name, ours.get_layer(name))
    blocks = [layer for layer in ours.layers if isinstance(layer, BottleneckBlock)]
    assert len(blocks) == 3 + 4 + 6 + 3
    for block in blocks:
        parts = {"1": (block.conv1, block.bn1), "2": (block.conv2, block.bn2), "3": (block.conv3, block.bn3)}
        if block.has_projection:
            parts["0"] = (block.shortcut_conv, block.shortcut_bn)
        for k, (conv, bn) in parts.items():
            copy_from(theirs, f"{block.name}_{k}_conv", conv)
            copy_from(theirs, f"{block.name}_{k}_bn", bn)
    # Keras projects in exactly the first block of each stage, as the automatic rule does.
    assert [b.name for b in blocks if b.has_projection] == [f"conv{s}_block1" for s in (2, 3, 4, 5)]
    assert_same_logits(ours, theirs, seeded_array(2, *shape, seed=1))


def test_densenet121_equals_keras_densenet121_with_copied_weights():
    shape = (32, 32, 3)
    theirs = keras.applications.DenseNet121(weights=None, input_shape=shape, classifier_activation=None)
    randomize_batch_norms(theirs, seed=2)
    ours = densenet121(shape, 1000)
    for name in ("conv1_conv", "conv1_bn", "bn", "predictions"):
        copy_from(theirs, name, ours.get_layer(name))
    for stage, num_layers in zip((2, 3, 4, 5), (6, 12, 24, 16)):
        block = ours.get_layer(f"conv{stage}")
        assert isinstance(block, DenseBlock) and len(block.dense_layers) == num_layers
        for i, layer in enumerate(block.dense_layers):
            prefix = f"conv{stage}_block{i + 1}"
            copy_from(theirs, f"{prefix}_0_bn", layer.bn1)
            copy_from(theirs, f"{prefix}_1_conv", layer.conv1)
            copy_from(theirs, f"{prefix}_1_bn", layer.bn2)
            copy_from(theirs, f"{prefix}_2_conv", layer.conv2)
        if stage < 5:
            transition = ours.get_layer(f"pool{stage}")
            assert isinstance(transition, TransitionLayer)
            copy_from(theirs, f"pool{stage}_bn", transition.bn)
            copy_from(theirs, f"pool{stage}_conv", transition.conv)
    assert_same_logits(ours, theirs, seeded_array(2, *shape, seed=3))


def test_vgg16_equals_keras_vgg16_with_copied_weights():
    shape = (32, 32, 3)
    theirs = keras.applications.VGG16(weights=None, input_shape=shape, classifier_activation=None)
    ours = build_cnn("vgg16", shape, 1000)
    for b, num_convs in enumerate((2, 2, 3, 3, 3), start=1):
        block = ours.get_layer(f"block{b}")
        assert isinstance(block, VGGBlock) and len(block.convs) == num_convs
        for i, conv in enumerate(block.convs, start=1):
            copy_from(theirs, f"block{b}_conv{i}", conv)
    for name in ("fc1", "fc2", "predictions"):
        copy_from(theirs, name, ours.get_layer(name))
    assert_same_logits(ours, theirs, seeded_array(2, *shape, seed=4, scale=10.0))


# --- builders: registry, options and errors -----------------------------------------------------


def test_registry_lists_every_architecture():
    assert sorted(CNN_BUILDERS) == sorted(
        ["lenet5", "alexnet", "vgg16", "vgg19", "vgg_small", "resnet18", "resnet50", "resnet152", "densenet121"]
    )


def test_build_cnn_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown CNN architecture 'resnet19'.*resnet18.*densenet121"):
        build_cnn("resnet19", (32, 32, 3), 10)


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("lenet5", dict(input_shape=(28, 28)), r"input_shape \(height, width, channels\)"),
        ("vgg16", dict(input_shape=(None, None, 3)), "needs all of height, width and channels"),
        ("resnet18", dict(input_shape=(32, 32, None)), "needs the channel count"),
        ("alexnet", dict(input_shape=(56, 56, 3)), "too small.*pool5"),
        ("vgg16", dict(input_shape=(16, 16, 3)), "too small.*block5"),
        ("densenet121", dict(input_shape=(16, 16, 3)), "too small"),
        ("lenet5", dict(num_classes=0), "num_classes must be a positive integer"),
        ("resnet18", dict(width=0), "width must be a positive integer"),
        ("densenet121", dict(growth_rate=-1), "growth_rate must be a positive integer"),
        ("lenet5", dict(pooling="median"), "pooling must be one of"),
        ("resnet50", dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        ("vgg_small", dict(width=0), "vgg_small width must be a positive integer"),
        ("vgg_small", dict(convs_per_stage=()), "needs at least one stage"),
        ("vgg_small", dict(convs_per_stage=(1, 0)), "convs_per_stage entries must be a positive integer"),
        ("vgg_small", dict(input_shape=(2, 2, 1), convs_per_stage=(1, 1, 1)), "too small.*pool2"),
    ],
)
def test_builders_reject_bad_arguments(name, kwargs, message):
    args = dict(input_shape=(32, 32, 3), num_classes=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        build_cnn(name, **args)


def test_alexnet_smallest_input_builds():
    model = build_cnn("alexnet", (57, 57, 3), 10)
    assert model.get_layer("pool5").output.shape[1:3] == (1, 1)


def test_small_input_options_and_headless_backbones():
    model = resnet18((28, 28, 1), 10, width=8, small_input=True, include_top=False)
    # No stride in the stem: 28 -> 28 -> 14 -> 7 -> 4 through the four stages.
    assert tuple(model.output.shape) == (None, 4, 4, 64)
    assert sum(isinstance(layer, BasicBlock) for layer in model.layers) == 8
    model = densenet121((28, 28, 1), 10, growth_rate=4, small_input=True, include_top=False)
    # 28 -> 14 -> 7 -> 3 through the transitions; channels 8 + 6*4 -> 16 + 12*4 -> ...
    c = 2 * 4
    for i, n in enumerate((6, 12, 24, 16)):
        c += n * 4
        if i < 3:
            c //= 2
    assert tuple(model.output.shape) == (None, 3, 3, c)


# --- training smoke tests on 28x28x1 ------------------------------------------------------------


@pytest.mark.parametrize(
    "name, kwargs, run_eagerly",
    [
        ("lenet5", {}, False),
        # One step: eager skips tracing the whole train graph (tens of seconds on 2 busy
        # cores); the graph path of every block is covered by its SavedModel contract.
        ("resnet18", dict(width=8, small_input=True, dropout=0.2), True),
        ("densenet121", dict(growth_rate=4, small_input=True), True),
        ("vgg_small", dict(width=8, dropout=0.2), False),
    ],
)
def test_one_fit_step_on_28x28_images_gives_finite_loss(name, kwargs, run_eagerly):
    x = seeded_array(8, 28, 28, 1, seed=5)
    y = np.arange(8) % 10
    model = build_cnn(name, (28, 28, 1), 10, **kwargs)
    model.compile(keras.optimizers.Adam(1e-3), LOGITS_LOSS, run_eagerly=run_eagerly)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), "every trainable weight should move after one Adam step"
    assert model.predict(x, verbose=0).shape == (8, 10)


def test_lenet5_overfits_64_random_labelled_images():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (64, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    model = lenet5()
    model.compile(keras.optimizers.Adam(3e-3), LOGITS_LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=60, verbose=0)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == 1.0


@pytest.mark.slow
def test_lenet5_fashion_mnist_test_accuracy():
    # Measured: 0.882 test accuracy after 3 epochs (about 2 minutes on 2 busy CPU cores).
    from pipelines import fashion_mnist

    train = fashion_mnist.make_dataset("train", batch_size=128, shuffle=True, seed=0)
    test = fashion_mnist.make_dataset("test", batch_size=512)
    model = lenet5(fashion_mnist.IMAGE_SHAPE, fashion_mnist.NUM_CLASSES, activation="relu", pooling="max")
    model.compile(keras.optimizers.Adam(2e-3), LOGITS_LOSS, metrics=["accuracy"])
    model.fit(train, epochs=3, verbose=2)
    _, accuracy = model.evaluate(test, verbose=0)
    print(f"LeNet-5 Fashion-MNIST test accuracy: {accuracy:.4f}")
    assert accuracy >= 0.87

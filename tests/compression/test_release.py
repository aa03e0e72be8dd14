"""compression/release.py: a release's network rebuilt from MANIFEST config + SavedModel variables."""

import numpy as np
import pytest

from apps.config import config_to_dict
from apps.export import export_saved_model
from apps.image_classification import FashionMNISTApp, FashionMNISTConfig
from apps.releases import write_manifest
from compression.release import copy_release_weights, load_release_network, release_max_abs_diff, saved_variables


@pytest.fixture(scope="module")
def tiny_release(tmp_path_factory):
    app = FashionMNISTApp()
    config = FashionMNISTConfig(model="lenet5", activation="relu", pooling="max", epochs=1)
    model = app.build_model(config)
    app_dir = tmp_path_factory.mktemp("saved_models") / "fashion_mnist"
    export_saved_model(app, model, config, app_dir / "1")
    write_manifest(app_dir, 1, {"path": "1", "config": config_to_dict(config)})
    return app_dir / "1", model


def test_loader_reproduces_the_exported_model(tiny_release):
    version_dir, exported = tiny_release
    network, config, app = load_release_network(version_dir)
    assert config.activation == "relu" and config.pooling == "max"
    for mine, theirs in zip(network.weights, exported.weights):
        assert mine.path == theirs.path
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    assert release_max_abs_diff(network, version_dir, images, app, config) < 1e-6


def test_loader_names_the_weights_that_do_not_fit(tiny_release):
    import tensorflow as tf

    from layers.cnn_models import lenet5

    version_dir, _ = tiny_release
    variables = saved_variables(tf.saved_model.load(str(version_dir)))
    with pytest.raises(ValueError, match=r"predictions/kernel: model \(84, 5\) vs stored \(84, 10\)"):
        copy_release_weights(lenet5(num_classes=5, activation="relu", pooling="max"), variables)
    with pytest.raises(FileNotFoundError, match="saved_model.pb"):
        load_release_network(version_dir.parent)

"""Early exit (layers/early_exit.py): the layer contract, thresholds against NumPy, real per-example compute, errors.

References:

* the stacked exit logits: for each exit ``l``, our ``ViTClassifier`` on a
  ``VisionTransformer`` cut after layer ``l``, with the embeddings, the first
  ``l`` encoder layers, the exit's layer norm and head copied in;
* ``predict_early``: NumPy of the exit rule on the all-exits logits of
  ``call``, ``exit = min{l : max_c softmax(z_l)_c >= tau}``, else the last exit;
* ``EarlyExitLoss``: NumPy of the (weighted) mean of the exits' cross-entropies.
"""

import keras
import numpy as np
import pytest

from layers.early_exit import EarlyExitClassifier, EarlyExitLoss, EarlyExitPredictor, early_exit_vit
from layers.vision_transformer import ViTClassifier, VisionTransformer
from tests.layer_harness import run_layer_contract, seeded_array

B = 2
IMAGE_SHAPE, PATCH, LAYERS, HEADS, HIDDEN, MLP, CLASSES = (16, 16, 1), 4, 4, 2, 16, 32, 5
EXITS = [1, 3]  # the last layer (4) is added: exits after layers 1, 3 and 4


def to_np(x):
    return keras.ops.convert_to_numpy(x)


def make_backbone(num_layers=LAYERS):
    return VisionTransformer(IMAGE_SHAPE, PATCH, num_layers=num_layers, num_heads=HEADS, hidden_dim=HIDDEN,
                             mlp_dim=MLP)


def make_model(exit_layers=EXITS):
    model = EarlyExitClassifier(make_backbone(), CLASSES, exit_layers=exit_layers)
    model.build()
    return model


def softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def truncated_classifier_logits(model, images):
    """Exit ``l`` recomputed as a ``ViTClassifier`` over a backbone of depth ``l`` with the weights copied in."""
    logits = []
    for exit_index, depth in enumerate(model.exit_layers):
        backbone = make_backbone(depth)
        reference = ViTClassifier(backbone, CLASSES)
        reference.build()
        backbone.embeddings.set_weights(model.backbone.embeddings.get_weights())
        for mine, theirs in zip(backbone.transformer_layers, model.backbone.transformer_layers):
            mine.set_weights(theirs.get_weights())
        backbone.layer_norm.set_weights(model.exit_norms[exit_index].get_weights())
        reference.head.set_weights(model.exit_heads[exit_index].get_weights())
        logits.append(to_np(reference(images)))
    return np.stack(logits, axis=1)


def middle_threshold(logits):
    """A threshold that splits the examples' exit confidences: the midpoint of the widest gap in their middle
    half, so that float round-off (eager against graph, batch of 64 against a gathered 30) cannot flip an exit."""
    confidence = np.sort(softmax(logits).max(-1).ravel())
    middle = confidence[len(confidence) // 4: 3 * len(confidence) // 4]
    gap = np.argmax(np.diff(middle))
    assert middle[gap + 1] - middle[gap] > 1e-5
    return float((middle[gap] + middle[gap + 1]) / 2)


def expected_exits(logits, threshold):
    """NumPy of the exit rule: the first exit whose max softmax probability >= threshold, else the last."""
    confidence = softmax(logits).max(-1)  # (batch, exits)
    reached = confidence >= threshold
    reached[:, -1] = True
    return reached.argmax(axis=1)


def test_early_exit_contract_against_truncated_vit_classifiers():
    report = run_layer_contract(
        lambda: EarlyExitClassifier(make_backbone(), CLASSES, exit_layers=EXITS),
        seeded_array(B, *IMAGE_SHAPE, seed=1),
        expected_output_shape=(B, 3, CLASSES),
        reference=truncated_classifier_logits,
        reference_uses_layer=True,
    )
    assert report.layer.exit_layers == [1, 3, 4]
    assert report.layer.exit_norms[-1] is report.layer.backbone.layer_norm


def test_early_exit_threshold_one_runs_every_layer_and_equals_the_last_exit():
    model = make_model()
    images = seeded_array(16, *IMAGE_SHAPE, seed=2)
    logits = to_np(model(images))
    assert softmax(logits).max() < 1.0  # so no probability can reach the threshold
    for threshold in (1.0, None):
        out = model.predict_early(images, threshold)
        np.testing.assert_array_equal(out["layers_used"], LAYERS)
        np.testing.assert_array_equal(out["exit_index"], 2)
        np.testing.assert_array_equal(out["predictions"], logits[:, -1].argmax(-1))
        np.testing.assert_allclose(out["confidence"], softmax(logits[:, -1]).max(-1), atol=1e-5)


def test_early_exit_tiny_threshold_exits_every_example_at_the_first_exit():
    model = make_model()
    images = seeded_array(16, *IMAGE_SHAPE, seed=3)
    logits = to_np(model(images))
    out = model.predict_early(images, threshold=1e-6)
    np.testing.assert_array_equal(out["layers_used"], EXITS[0])
    np.testing.assert_array_equal(out["exit_index"], 0)
    np.testing.assert_array_equal(out["predictions"], logits[:, 0].argmax(-1))


def test_early_exit_mixed_threshold_matches_numpy_of_the_exit_rule():
    model = make_model()
    images = seeded_array(64, *IMAGE_SHAPE, seed=4, scale=3.0)
    logits = to_np(model(images))
    threshold = middle_threshold(logits)
    exits = expected_exits(logits, threshold)
    assert len(np.unique(exits)) >= 2, "the threshold should split the examples between exits"
    out = model.predict_early(images, threshold)
    np.testing.assert_array_equal(out["exit_index"], exits)
    np.testing.assert_array_equal(out["layers_used"], np.array(model.exit_layers)[exits])
    chosen = logits[np.arange(len(images)), exits]
    np.testing.assert_array_equal(out["predictions"], chosen.argmax(-1))
    np.testing.assert_allclose(out["confidence"], softmax(chosen).max(-1), atol=1e-5)


def test_early_exit_compiled_predictor_equals_eager_predict_early_and_traces_each_step_once():
    model = make_model()
    predictor = EarlyExitPredictor(model)
    for seed, size in ((9, 32), (10, 17)):  # two batch sizes: the free batch axis must not retrace
        images = seeded_array(size, *IMAGE_SHAPE, seed=seed, scale=3.0)
        for t in (middle_threshold(to_np(model(images))), None):
            compiled, eager = predictor(images, t), model.predict_early(images, t)
            for key in ("predictions", "layers_used", "exit_index"):
                np.testing.assert_array_equal(compiled[key], eager[key], err_msg=key)
            np.testing.assert_allclose(compiled["confidence"], eager["confidence"], atol=1e-5)
    assert all(len(f._list_all_concrete_functions()) == 1 for f in predictor._compiled.values())
    with pytest.raises(ValueError, match="needs an EarlyExitClassifier"):
        EarlyExitPredictor(make_backbone())


def test_early_exit_layers_run_only_on_the_examples_still_active():
    model = make_model()
    images = seeded_array(64, *IMAGE_SHAPE, seed=5, scale=3.0)
    threshold = middle_threshold(to_np(model(images))[:, :1])  # about half leave at the first exit
    rows_seen = []
    for layer in model.backbone.transformer_layers:
        def counting_call(inputs, *args, _call=layer.call, **kwargs):
            rows_seen.append(int(inputs.shape[0]))
            return _call(inputs, *args, **kwargs)

        layer.call = counting_call
    out = model.predict_early(images, threshold)
    expected = [int((out["layers_used"] >= depth).sum()) for depth in range(1, LAYERS + 1)]
    expected = [n for n in expected if n]
    assert rows_seen == expected
    assert rows_seen[0] == 64 and rows_seen[1] < 64


def test_early_exit_keras_file_round_trip_keeps_exits_and_early_predictions(tmp_path):
    model = make_model()
    images = seeded_array(8, *IMAGE_SHAPE, seed=6)
    path = tmp_path / "early_exit.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded, EarlyExitClassifier) and reloaded.exit_layers == model.exit_layers
    np.testing.assert_allclose(to_np(reloaded(images)), to_np(model(images)), atol=1e-5)
    for key, value in model.predict_early(images, 0.3).items():
        np.testing.assert_allclose(reloaded.predict_early(images, 0.3)[key], value, atol=1e-5)


@pytest.mark.parametrize("weights", [None, [1.0, 0.0, 3.0]])
def test_early_exit_loss_is_the_weighted_mean_of_exit_cross_entropies(weights):
    logits = seeded_array(4, 3, CLASSES, seed=7)
    labels = np.array([0, 4, 2, 1])
    loss = EarlyExitLoss(exit_weights=weights)
    w = np.full(3, 1 / 3) if weights is None else np.array(weights) / sum(weights)
    cross_entropy = -np.log(softmax(logits)[np.arange(4), :, labels])  # (batch, exits)
    np.testing.assert_allclose(to_np(loss(labels, logits)), (cross_entropy * w).sum(1).mean(), rtol=1e-5)
    clone = EarlyExitLoss.from_config(loss.get_config())
    assert clone.get_config() == loss.get_config()


def test_early_exit_training_lowers_every_exit_loss_on_a_tiny_batch():
    model = early_exit_vit(IMAGE_SHAPE, CLASSES, patch_size=PATCH, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN,
                           mlp_dim=MLP)
    images, labels = seeded_array(8, *IMAGE_SHAPE, seed=8), np.arange(8) % CLASSES
    per_exit = lambda: [  # noqa: E731
        float(to_np(keras.losses.sparse_categorical_crossentropy(labels, z, from_logits=True)).mean())
        for z in np.moveaxis(to_np(model(images)), 1, 0)
    ]
    before = per_exit()
    model.compile(keras.optimizers.Adam(3e-3), EarlyExitLoss())
    model.fit(images, labels, batch_size=8, epochs=40, verbose=0)
    after = per_exit()
    assert all(a < 0.5 * b for a, b in zip(after, before)), (before, after)


@pytest.mark.parametrize("threshold", [0, -0.1, 1.5, float("nan"), "high"])
def test_early_exit_threshold_outside_zero_one_raises(threshold):
    with pytest.raises(ValueError, match=r"threshold must be a probability in \(0, 1\]"):
        make_model().predict_early(seeded_array(2, *IMAGE_SHAPE), threshold)


@pytest.mark.parametrize("exit_layers, message", [
    ([], "exit_layers is empty"),
    ([0], "out of range"),
    ([LAYERS + 1], "out of range"),
    ([1.5], "out of range"),
    ([2, 2], "repeats a layer"),
    (3, "must be a list"),
])
def test_early_exit_bad_exit_layers_raise(exit_layers, message):
    with pytest.raises(ValueError, match=message):
        EarlyExitClassifier(make_backbone(), CLASSES, exit_layers=exit_layers)


def test_early_exit_bad_inputs_raise():
    model = make_model()
    with pytest.raises(ValueError, match="expected inputs of rank 4"):
        model.predict_early(seeded_array(2, 16, 16), 0.5)
    with pytest.raises(ValueError, match="made for 1 channels"):
        model.predict_early(seeded_array(2, 16, 16, 3), 0.5)
    with pytest.raises(ValueError, match="needs a VisionTransformer backbone"):
        EarlyExitClassifier(keras.layers.Dense(3), CLASSES)
    with pytest.raises(ValueError, match="2 exit_weights for 3 exits"):
        EarlyExitLoss(exit_weights=[1.0, 1.0])(np.zeros(2), seeded_array(2, 3, CLASSES))
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        EarlyExitLoss(exit_weights=[1.0, -1.0, 1.0])

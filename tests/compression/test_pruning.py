"""compression/pruning.py: Zhu & Gupta's schedule, magnitude masks, and masks that hold through fine-tuning."""

import keras
import numpy as np
import pytest

from compression.pruning import (
    MagnitudePruning,
    PolynomialSparsity,
    magnitude_mask,
    prunable_weights,
    sparsity_report,
    stored_size,
)


def test_schedule_follows_the_cubic_formula():
    schedule = PolynomialSparsity(0.8, begin_step=10, end_step=110, frequency=20, initial_sparsity=0.1)
    assert schedule(0) == 0.0 and schedule(9) == 0.0
    for step in (10, 30, 60, 110):
        expected = 0.8 + (0.1 - 0.8) * (1 - (step - 10) / 100) ** 3
        assert schedule(step) == pytest.approx(expected)
    assert schedule(10) == pytest.approx(0.1) and schedule(110) == pytest.approx(0.8) and schedule(500) == 0.8
    assert [s for s in range(200) if schedule.updates_at(s)] == [10, 30, 50, 70, 90, 110]
    uneven = PolynomialSparsity(0.5, begin_step=0, end_step=25, frequency=10)
    assert [s for s in range(40) if uneven.updates_at(s)] == [0, 10, 20, 25]  # the end step always updates


@pytest.mark.parametrize("kwargs", [dict(final_sparsity=1.0), dict(begin_step=5, end_step=5),
                                    dict(frequency=0), dict(initial_sparsity=0.9)])
def test_schedule_refuses_bad_values(kwargs):
    with pytest.raises(ValueError):
        PolynomialSparsity(**{"final_sparsity": 0.5, "begin_step": 0, "end_step": 10, **kwargs})


def test_magnitude_mask_zeroes_exactly_the_smallest():
    weights = np.array([[0.5, -0.1, 2.0], [-3.0, 0.05, 0.2]], "float32")
    mask = magnitude_mask(weights, 0.5)
    np.testing.assert_array_equal(mask, [[1, 0, 1], [1, 0, 0]])
    big = np.random.default_rng(0).normal(size=(40, 25))
    assert np.sum(magnitude_mask(big, 0.8) == 0) == 800
    assert magnitude_mask(big, 0.0).all()


def _model():
    return keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(4)])


def test_callback_reaches_target_and_keeps_pruned_weights_zero_through_fine_tuning():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(256, 8)).astype("float32"), rng.normal(size=(256, 4)).astype("float32")
    model = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse")
    schedule = PolynomialSparsity(0.75, begin_step=2, end_step=20, frequency=4)
    pruning = MagnitudePruning(schedule)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[pruning])  # 24 steps: pruning ends at 20
    assert pruning.step == 24
    masks_at_end = {path: mask.copy() for path, mask in pruning.masks.items()}
    # 40 more Adam steps: momentum pushes on pruned weights, the masks push them back to exactly zero.
    model.fit(x, y, batch_size=32, epochs=5, verbose=0, callbacks=[pruning])
    report = sparsity_report(model)
    for weight in prunable_weights(model):
        value = keras.ops.convert_to_numpy(weight.value)
        np.testing.assert_array_equal(pruning.masks[weight.path], masks_at_end[weight.path])
        assert np.all(value[masks_at_end[weight.path] == 0] == 0.0)
        assert report[weight.path] == pytest.approx(0.75, abs=1 / value.size)
    assert report["total"] == pytest.approx(0.75, abs=0.01)
    biases = [w for w in model.weights if w.path.endswith("bias")]
    assert all(np.any(keras.ops.convert_to_numpy(b.value) != 0) for b in biases)


def test_callback_needs_one_step_per_execution():
    model = _model()
    model.compile("sgd", "mse", steps_per_execution=2)
    with pytest.raises(ValueError, match="steps_per_execution"):
        model.fit(np.zeros((8, 8)), np.zeros((8, 4)), verbose=0,
                  callbacks=[MagnitudePruning(PolynomialSparsity(0.5, 0, 2, 1))])


def test_stored_size_compresses_zeros():
    dense = np.random.default_rng(0).normal(size=10000).astype("float32")
    sparse = dense * magnitude_mask(dense, 0.8)
    raw_dense, gz_dense = stored_size(dense.tobytes())
    raw_sparse, gz_sparse = stored_size(sparse.tobytes())
    assert raw_dense == raw_sparse == 40000
    assert gz_sparse < 0.45 * gz_dense

"""apps/losses.py: the smoothed token loss and the masked accuracy against NumPy, compiled or not."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps.losses import MaskedAccuracy, SmoothedSequenceLoss


def _numpy_loss(logits, y, eps):
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_token = (1 - eps) * -np.take_along_axis(log_p, y[..., None], -1)[..., 0] - eps * log_p.mean(-1)
    mask = y != 0
    return (per_token * mask).sum() / mask.sum()


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype("float32")
    y = rng.integers(1, 7, size=(3, 5))
    y[0, 3:] = 0
    y[2, 1:] = 0
    return logits, y


def test_smoothed_loss_and_accuracy_match_numpy(batch):
    logits, y = batch
    np.testing.assert_allclose(float(SmoothedSequenceLoss(0.1)(y, logits)), _numpy_loss(logits, y, 0.1), rtol=1e-5)
    # eps = 0 is the plain masked cross-entropy of Keras (pads dropped with ignore_class).
    keras_ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)
    np.testing.assert_allclose(float(SmoothedSequenceLoss(0.0)(y, logits)), float(keras_ce(y, logits)), rtol=1e-5)
    metric = MaskedAccuracy()
    metric.update_state(y, logits)
    mask = y != 0
    np.testing.assert_allclose(float(metric.result()), ((logits.argmax(-1) == y) & mask).sum() / mask.sum())
    with pytest.raises(ValueError, match="label_smoothing must be in"):
        SmoothedSequenceLoss(1.0)


def test_bfloat16_logits_and_gradients_agree_with_the_float32_loss(batch):
    logits, y = batch
    loss = SmoothedSequenceLoss(0.1)
    np.testing.assert_allclose(
        float(loss(y, tf.cast(logits, tf.bfloat16))), _numpy_loss(logits.astype("float32"), y, 0.1), rtol=2e-2
    )
    variable = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = loss(y, variable)
    gradient = tape.gradient(value, variable).numpy()
    # d/dlogits of the smoothed loss: (softmax - (1 - eps) onehot - eps / V) * mask / count.
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    target = 0.9 * np.eye(7)[y] + 0.1 / 7
    mask = (y != 0)[..., None]
    np.testing.assert_allclose(gradient, (p - target) * mask / mask.sum(), atol=1e-6)


def test_loss_and_metric_round_trip_their_config():
    loss = SmoothedSequenceLoss(0.2, pad_id=3)
    assert SmoothedSequenceLoss.from_config(loss.get_config()).get_config() == loss.get_config()
    metric = MaskedAccuracy(pad_id=3)
    assert MaskedAccuracy.from_config(metric.get_config()).pad_id == 3

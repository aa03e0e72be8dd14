"""compression/distillation.py: the loss against NumPy, and a Distiller that trains only the student."""

import keras
import numpy as np
import pytest

from compression.distillation import Distiller, distillation_loss


def _numpy_loss(labels, student, teacher, temperature, alpha):
    def log_softmax(z):
        z = z - z.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    hard = -log_softmax(student)[np.arange(len(labels)), labels].mean()
    p_teacher = np.exp(log_softmax(teacher / temperature))
    kl = (p_teacher * (log_softmax(teacher / temperature) - log_softmax(student / temperature))).sum(-1).mean()
    return alpha * hard + (1 - alpha) * temperature**2 * kl


@pytest.mark.parametrize("temperature, alpha", [(1.0, 0.5), (4.0, 0.1), (2.5, 0.0), (3.0, 1.0)])
def test_loss_equals_numpy_formula(temperature, alpha):
    rng = np.random.default_rng(0)
    student = rng.normal(size=(16, 7)).astype("float32") * 3
    teacher = rng.normal(size=(16, 7)).astype("float32") * 3
    labels = rng.integers(0, 7, size=16)
    got = float(keras.ops.convert_to_numpy(distillation_loss(labels, student, teacher, temperature, alpha)))
    np.testing.assert_allclose(got, _numpy_loss(labels, student, teacher, temperature, alpha), rtol=1e-5)


def test_soft_term_vanishes_when_student_matches_teacher():
    logits = np.random.default_rng(1).normal(size=(8, 5)).astype("float32")
    loss = distillation_loss(np.zeros(8, "int32"), logits, logits, temperature=4.0, alpha=0.0)
    assert abs(float(keras.ops.convert_to_numpy(loss))) < 1e-6


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(np.zeros(2, "int32"), np.zeros((2, 3)), np.zeros((2, 3)), temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        distillation_loss(np.zeros(2, "int32"), np.zeros((2, 3)), np.zeros((2, 3)), alpha=1.5)


def _mlp(units, name):
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(units, activation="relu"), keras.layers.Dense(3)],
                            name=name)


def test_distiller_trains_the_student_only_and_moves_it_toward_the_teacher():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(64, 6)).astype("float32")
    teacher = _mlp(32, "teacher")
    y = np.argmax(keras.ops.convert_to_numpy(teacher(x)), axis=-1)
    student = _mlp(4, "student")
    teacher_before = [w.copy() for w in teacher.get_weights()]
    distiller = Distiller(student, teacher, temperature=2.0, alpha=0.2)
    distiller.compile(optimizer=keras.optimizers.Adam(0.02), metrics=[keras.metrics.SparseCategoricalAccuracy()])
    before = float(keras.ops.convert_to_numpy(distillation_loss(y, student(x), teacher(x), 2.0, 0.2)))
    history = distiller.fit(x, y, batch_size=16, epochs=15, verbose=0)
    after = float(keras.ops.convert_to_numpy(distillation_loss(y, student(x), teacher(x), 2.0, 0.2)))
    assert after < 0.5 * before
    assert "sparse_categorical_accuracy" in history.history
    assert teacher.trainable  # the caller's teacher is not modified
    assert {w.path for w in distiller.trainable_weights} == {w.path for w in student.trainable_weights}
    for old, new in zip(teacher_before, teacher.get_weights()):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(distiller(x)), keras.ops.convert_to_numpy(student(x)))

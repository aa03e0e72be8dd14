"""Section 11.1, knowledge distillation (Hinton, Vinyals & Dean, 2015): a small student learns from a
large teacher's softened outputs as well as from the labels.

With logits ``z_s`` (student) and ``z_t`` (teacher), temperature ``T`` and weight ``alpha``::

    L = alpha * CE(y, softmax(z_s)) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))

The temperature spreads the teacher's probability over the wrong classes
("a shirt looks more like a T-shirt than a sandal"), the dark knowledge a
one-hot label lacks; ``T^2`` keeps the soft term's gradients the same size
as ``T`` changes (they scale as ``1 / T^2``). The KL divergence differs from
the cross-entropy to the soft targets only by the teacher's entropy, a
constant, so both give the same gradients; KL is 0 when the student matches.

* :func:`distillation_loss`: ``L`` for one batch, in ``keras.ops``.
* :class:`Distiller`: a ``keras.Model`` around ``student`` and a frozen
  ``teacher`` whose ``compute_loss`` is ``L``; ``fit`` trains the student,
  metrics see the student's logits, and ``distiller.student`` is what is saved.

Keras 3 ships no distillation API (keras.io's example is this same
``compute_loss`` override), hence our own.

Example::

    distiller = Distiller(student, teacher, temperature=4.0, alpha=0.1)
    distiller.compile(optimizer="adam", metrics=[keras.metrics.SparseCategoricalAccuracy()])
    distiller.fit(train, epochs=5)
    distiller.student.save("student.keras")
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["Distiller", "distillation_loss"]


def distillation_loss(labels, student_logits, teacher_logits, temperature=4.0, alpha=0.1):
    """``alpha * CE(y, z_s) + (1 - alpha) * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))``, batch mean.

    Args:
        labels: int ``(batch,)`` class ids.
        student_logits, teacher_logits: float ``(batch, classes)``.
        temperature: float > 0, ``T``. Default 4.
        alpha: float in ``[0, 1]``, the hard loss's weight. Default 0.1.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    student_logits = ops.cast(student_logits, "float32")
    teacher_logits = ops.stop_gradient(ops.cast(teacher_logits, "float32"))
    hard = ops.mean(ops.sparse_categorical_crossentropy(labels, student_logits, from_logits=True))
    teacher_log_p = ops.log_softmax(teacher_logits / temperature, axis=-1)
    student_log_p = ops.log_softmax(student_logits / temperature, axis=-1)
    kl = ops.sum(ops.exp(teacher_log_p) * (teacher_log_p - student_log_p), axis=-1)
    return alpha * hard + (1.0 - alpha) * temperature**2 * ops.mean(kl)


class Distiller(keras.Model):
    """Train ``student`` on :func:`distillation_loss` against a frozen ``teacher``.

    Args:
        student: ``keras.Model``, images to logits; the model being trained.
        teacher: ``keras.Model``, images to logits; run in inference mode and never
            updated (only the student's weights are trainable here; the teacher's own
            ``trainable`` flag is left alone).
        temperature: float, ``T``. Default 4.
        alpha: float, the hard-label weight. Default 0.1.

    ``distiller(x)`` is ``student(x)``. Compile without a loss (it is fixed);
    metrics see the student's logits. Not meant to be saved: save ``student``.
    """

    def __init__(self, student, teacher, temperature=4.0, alpha=0.1, **kwargs):
        super().__init__(**kwargs)
        if temperature <= 0 or not 0.0 <= alpha <= 1.0:
            raise ValueError(f"need temperature > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self.student = student
        self.teacher = teacher
        self.temperature = float(temperature)
        self.alpha = float(alpha)

    @property
    def trainable_weights(self):
        # Only the student trains. Overriding this rather than setting ``teacher.trainable = False`` leaves the
        # caller's teacher as it was (a frozen flag would be copied into every clone of it made later).
        return self.student.trainable_weights

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        teacher_logits = self.teacher(x, training=False)
        loss = distillation_loss(y, y_pred, teacher_logits, self.temperature, self.alpha)
        if self.student.losses:  # weight regularizers of the student
            loss = loss + ops.sum(ops.stack(self.student.losses))
        return loss

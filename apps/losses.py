"""Token losses and metrics shared by every generative app (translation, summarization, code, captions, speech).

Loss (textbook section 5.1, training): token cross-entropy with label
smoothing over the real (non-pad) target tokens of a batch::

    L = sum_t m_t [(1 - eps) (-log p(y_t)) + eps mean_v(-log p(v))] / sum_t m_t,   m_t = [y_t != pad]

Why a compiled kernel: the logits are ``(tokens, vocabulary)``, tens of
millions of numbers per step, and the log-softmax, the two reductions, the mask
and their gradients are memory-bound element-wise passes over them. TensorFlow
runs each as its own kernel (``SparseSoftmaxCrossEntropyWithLogits`` alone is
single-threaded on CPU); XLA fuses them into one pass forward and one backward.
Measured on this machine (``benchmarks/training.py`` shapes, 4,096 tokens x
8,000 words): 196 ms -> 70 ms for the loss and its gradient. So with the
TensorFlow backend the computation is a ``tf.function(jit_compile=True)``
"island" inside an otherwise uncompiled training step: the matrix products
around it stay on oneDNN, which XLA's CPU backend does not match under
``mixed_bfloat16`` (measured 1.9x slower for the whole step). Other backends
run the same ``keras.ops`` code uncompiled.

Example::

    model.compile(optimizer="adam", loss=SmoothedSequenceLoss(0.1), metrics=[MaskedAccuracy()])
"""

from __future__ import annotations

import keras
from keras import ops

from layers.validation import check_positive_float

__all__ = ["MaskedAccuracy", "SmoothedSequenceLoss", "PAD_ID"]

PAD_ID = 0


def _compiled(function):
    """``function`` as an XLA-compiled TensorFlow function with the TensorFlow backend, else as it is."""
    if keras.backend.backend() != "tensorflow":
        return function
    import tensorflow as tf

    return tf.function(function, jit_compile=True, autograph=False)


def _smoothed_nll_sums(y_true, y_pred, label_smoothing, pad_id):
    """``(sum of smoothed token losses, number of real tokens)`` of a batch."""
    log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
    y_true = ops.cast(y_true, "int32")
    nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(y_true, -1), axis=-1), -1)
    loss = (1.0 - label_smoothing) * nll - label_smoothing * ops.mean(log_probs, axis=-1)
    mask = ops.cast(ops.not_equal(y_true, pad_id), "float32")
    return ops.sum(loss * mask), ops.sum(mask)


def _hits(y_true, y_pred, pad_id):
    """``(correct argmax predictions, real tokens)`` of a batch."""
    y_true = ops.cast(y_true, "int32")
    mask = ops.cast(ops.not_equal(y_true, pad_id), "float32")
    hit = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32")
    return ops.sum(hit * mask), ops.sum(mask)


_smoothed_nll_kernel = _compiled(_smoothed_nll_sums)
_hits_kernel = _compiled(_hits)


@keras.saving.register_keras_serializable(package="tfsuite")
class SmoothedSequenceLoss(keras.losses.Loss):
    """Label-smoothed token cross-entropy over non-pad targets (Szegedy et al. 2016; Vaswani et al. 2017).

    ``L = sum_t m_t [(1 - eps) (-log p(y_t)) + eps mean_v(-log p(v))] / sum_t m_t``,
    ``m_t = [y_t != pad_id]``.

    Args:
        label_smoothing: float in [0, 1). Default 0.1.
        pad_id: int, target id that carries no loss. Default 0.
        name: str. Default ``"smoothed_sequence_loss"``.

    Inputs: ``y_true`` int ``(batch, T)``, ``y_pred`` logits ``(batch, T, vocab)`` (any float dtype).
    Output: scalar.
    """

    def __init__(self, label_smoothing=0.1, pad_id=PAD_ID, name="smoothed_sequence_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = check_positive_float("label_smoothing", label_smoothing, allow_zero=True)
        if self.label_smoothing >= 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.pad_id = int(pad_id)

    def call(self, y_true, y_pred):
        total, count = _smoothed_nll_kernel(y_true, y_pred, self.label_smoothing, self.pad_id)
        return total / ops.maximum(count, 1.0)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "pad_id": self.pad_id}


@keras.saving.register_keras_serializable(package="tfsuite")
class MaskedAccuracy(keras.metrics.Metric):
    """Next-token accuracy over non-pad targets (teacher forcing): a cheap validation signal.

    Args:
        pad_id: int. Default 0.
        name: str. Default ``"accuracy"``.
    """

    def __init__(self, pad_id=PAD_ID, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.pad_id = int(pad_id)
        self.correct = self.add_variable(shape=(), initializer="zeros", name="correct")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        correct, count = _hits_kernel(y_true, y_pred, self.pad_id)
        self.correct.assign_add(correct)
        self.count.assign_add(count)

    def result(self):
        return self.correct / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.correct.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}

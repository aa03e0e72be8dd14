"""Section 11.1, magnitude pruning with a gradual sparsity schedule (Zhu & Gupta, 2017).

The target sparsity rises from ``s_i`` to ``s_f`` over ``n`` pruning steps of
``Delta t`` training steps each, starting at step ``t_0``::

    s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (n Delta t))^3,   t in {t_0, t_0 + Delta t, ..., t_0 + n Delta t}

fast at first, while many redundant weights remain, and slowly near the end.
At each of those steps every kernel's mask zeroes its ``round(s_t * size)``
smallest-magnitude weights (each kernel pruned to the same sparsity, biases
kept). Between pruning steps, and after the last, the masks are applied again
after every optimizer step, so pruned weights stay zero while the others are
fine-tuned (the optimizer's momentum would otherwise bring them back).

* :class:`PolynomialSparsity`: the schedule ``s_t`` and the steps it updates masks at.
* :func:`magnitude_mask`: the 0/1 mask of one tensor at a sparsity.
* :class:`MagnitudePruning`: the ``keras.callbacks.Callback`` that keeps masks and applies them.
* :func:`sparsity_report`, :func:`stored_size`: zeros per kernel; bytes stored raw and gzip-compressed.

Why our own code: ``tensorflow-model-optimization`` (``prune_low_magnitude``,
``PolynomialDecay``, ``strip_pruning``) wraps ``tf_keras`` layers and refuses
Keras 3 models (it raises on a ``keras.Sequential`` of Keras 3.15), and Keras 3
has no pruning API. Here the masks live in the callback, not in wrapper
layers: the model stays the plain model, so there is nothing to strip before
saving or converting it.

Storage and speed, measured in ``benchmarks/compression.py``: a pruned model
stored dense is exactly as large as the original; only compression (gzip of the
weights file) turns the zeros into bytes saved. Dense kernels (oneDNN, XNNPACK)
multiply the zeros like any weight, so unstructured sparsity brings no speed-up
by itself.

Example::

    schedule = PolynomialSparsity(0.8, begin_step=0, end_step=2000, frequency=100)
    model.fit(train, epochs=5, callbacks=[MagnitudePruning(schedule)])
    sparsity_report(model)["total"]  # 0.8
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

__all__ = ["MagnitudePruning", "PolynomialSparsity", "magnitude_mask", "prunable_weights", "sparsity_report",
           "stored_size"]


@dataclass(frozen=True)
class PolynomialSparsity:
    """Zhu & Gupta's schedule: ``s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^power``.

    Args:
        final_sparsity: float in ``[0, 1)``, ``s_f``.
        begin_step: int >= 0, ``t_0``: the first step that prunes.
        end_step: int > ``begin_step``, ``t_0 + n Delta t``: ``s_f`` is reached here.
        frequency: int >= 1, ``Delta t``: training steps between mask updates. Default 100.
        initial_sparsity: float, ``s_i``. Default 0.
        power: float, default 3 (the paper's cubic).

    ``schedule(step)`` is the target sparsity after ``step`` optimizer steps
    (0 before ``begin_step``); ``schedule.updates_at(step)`` says whether the
    masks are recomputed then (every ``frequency`` steps from ``begin_step``, and at ``end_step``).
    """

    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int = 100
    initial_sparsity: float = 0.0
    power: float = 3.0

    def __post_init__(self):
        for name in ("final_sparsity", "initial_sparsity"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        if self.initial_sparsity > self.final_sparsity:
            raise ValueError(f"initial_sparsity {self.initial_sparsity} exceeds final_sparsity {self.final_sparsity}")
        if self.begin_step < 0 or self.end_step <= self.begin_step:
            raise ValueError(f"need 0 <= begin_step < end_step, got begin_step={self.begin_step}, "
                             f"end_step={self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1 step, got {self.frequency}")

    def __call__(self, step):
        if step < self.begin_step:
            return 0.0
        progress = min(1.0, (step - self.begin_step) / (self.end_step - self.begin_step))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - progress) ** self.power

    def updates_at(self, step):
        """True at the steps that recompute the masks: ``t_0 + k Delta t <= t_end``, and ``t_end``."""
        if step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


def magnitude_mask(weights, sparsity):
    """0/1 float32 mask of ``weights``' shape zeroing its ``round(sparsity * size)`` smallest ``|w|``.

    Exactly that many zeros (ties broken by position), so the reported
    sparsity is the scheduled one; already pruned (zero) weights are the
    smallest and stay pruned.
    """
    weights = np.asarray(weights)
    count = int(round(float(sparsity) * weights.size))
    mask = np.ones(weights.size, np.float32)
    if count:
        mask[np.argsort(np.abs(weights).reshape(-1), kind="stable")[:count]] = 0.0
    return mask.reshape(weights.shape)


def prunable_weights(model):
    """The weights pruning acts on: every kernel (Conv2D, Dense, ...), no biases or normalization parameters."""
    return [w for w in model.trainable_weights if w.path.split("/")[-1] == "kernel"]


class MagnitudePruning(keras.callbacks.Callback):
    """Gradual magnitude pruning of a model's kernels during ``fit`` (see the module docstring).

    Counts optimizer steps itself (across several ``fit`` calls), recomputes
    the masks at the schedule's update steps and multiplies every kernel by
    its mask after every training batch. Needs ``steps_per_execution=1`` (the
    default) so that "after every batch" is "after every optimizer step".

    Args:
        schedule: :class:`PolynomialSparsity`.
        weights: list of variables to prune, or None for :func:`prunable_weights` of the model.

    Attributes:
        masks: ``{weight path: mask array}`` once training has started.
        step: optimizer steps seen.
    """

    def __init__(self, schedule, weights=None):
        super().__init__()
        self.schedule = schedule
        self._weights = weights
        self.masks = {}
        self.step = 0

    def on_train_begin(self, logs=None):
        steps_per_execution = getattr(self.model, "steps_per_execution", 1)
        if int(keras.ops.convert_to_numpy(steps_per_execution)) != 1:
            raise ValueError("MagnitudePruning needs compile(steps_per_execution=1): masks are applied after every "
                             f"optimizer step, got steps_per_execution={steps_per_execution}")
        if self._weights is None:
            self._weights = prunable_weights(self.model)
        if not self._weights:
            raise ValueError(f"{self.model.name} has no kernel to prune")
        for weight in self._weights:
            self.masks.setdefault(weight.path, np.ones(weight.shape, np.float32))

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.schedule.updates_at(self.step):
            sparsity = self.schedule(self.step)
            for weight in self._weights:
                self.masks[weight.path] = magnitude_mask(keras.ops.convert_to_numpy(weight.value), sparsity)
        self.apply_masks()

    def apply_masks(self):
        """Zero the pruned weights now (after an optimizer step, or after loading weights)."""
        for weight in self._weights:
            weight.assign(weight.value * self.masks[weight.path])


def sparsity_report(model, weights=None):
    """Fraction of exact zeros: ``{weight path: fraction, ..., "total": over all of them}`` (kernels by default)."""
    weights = prunable_weights(model) if weights is None else weights
    report, zeros, size = {}, 0, 0
    for weight in weights:
        value = keras.ops.convert_to_numpy(weight.value)
        report[weight.path] = float(np.mean(value == 0))
        zeros += int(np.sum(value == 0))
        size += value.size
    report["total"] = zeros / max(size, 1)
    return report


def stored_size(data):
    """``(bytes, gzip bytes)`` of a file (path) or of bytes: what a pruned model costs to store and to ship."""
    if isinstance(data, (str, Path)):
        data = Path(data).read_bytes()
    return len(data), len(gzip.compress(bytes(data), compresslevel=9, mtime=0))

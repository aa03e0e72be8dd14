"""Position encodings (textbook section 5.2).

Attention is order-blind, so the Transformer adds a position signal to the
token embeddings: either the fixed sinusoids of the original paper or a learned
embedding per position. Both layers return the encoding only (shaped like the
inputs), which the model adds to its token embeddings, as
``keras_hub.layers.SinePositionEncoding`` and ``PositionEmbedding`` do.
``start_index`` shifts the positions, so a decoder fed one token at a time
(KV-cache decoding) gets the encoding of its absolute position.
"""

import keras
import numpy as np
from keras import ops

from layers.validation import check_min_rank, check_positive_float, check_positive_int

__all__ = ["SinusoidalPositionEncoding", "LearnedPositionEmbedding"]


def _sequence_length(inputs):
    return inputs.shape[-2] if inputs.shape[-2] is not None else ops.shape(inputs)[-2]


@keras.saving.register_keras_serializable(package="tfsuite")
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Section 5.2, sinusoidal encoding: ``PE(pos, 2i) = sin(pos / 10000^(2i/d_model))``, ``PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))``.

    No weights. Even features are sines, odd features cosines, of the same
    frequency for each pair ``(2i, 2i+1)``.

    Args:
        max_wavelength: float, the ``10000`` of the formula. Default ``10000.0``.

    Call arguments:
        inputs: ``(batch, T, d_model)`` (only its shape is used).
        start_index: int or scalar int tensor, position of the first step.
            Default 0.

    Output: ``(batch, T, d_model)``, the encoding of positions
    ``start_index .. start_index + T - 1``.

    Example:
    >>> pe = SinusoidalPositionEncoding()(np.zeros((1, 50, 16), "float32"))
    >>> pe.shape
    (1, 50, 16)
    """

    def __init__(self, max_wavelength=10000.0, **kwargs):
        super().__init__(**kwargs)
        self.max_wavelength = check_positive_float("SinusoidalPositionEncoding max_wavelength", max_wavelength)

    def build(self, input_shape):
        check_min_rank("SinusoidalPositionEncoding", input_shape, 2, "(batch, time, d_model)")
        if input_shape[-1] is None:
            raise ValueError(
                f"SinusoidalPositionEncoding needs a known d_model (last axis), got shape {tuple(input_shape)}"
            )

    def call(self, inputs, start_index=0):
        d_model = inputs.shape[-1]
        # The per-feature frequency 1 / 10000^(2i/d_model) and the sin/cos choice
        # are static: compute them in NumPy so the graph only holds constants.
        two_i = 2 * (np.arange(d_model) // 2)
        inverse_frequency = (1.0 / self.max_wavelength ** (two_i / d_model)).astype("float32")
        is_even = (np.arange(d_model) % 2 == 0)
        positions = ops.arange(_sequence_length(inputs), dtype="int32") + ops.cast(start_index, "int32")
        angles = ops.expand_dims(ops.cast(positions, "float32"), 1) * inverse_frequency
        encoding = ops.where(is_even, ops.sin(angles), ops.cos(angles))
        return ops.broadcast_to(ops.cast(encoding, self.compute_dtype), ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_wavelength": self.max_wavelength}


@keras.saving.register_keras_serializable(package="tfsuite")
class LearnedPositionEmbedding(keras.layers.Layer):
    """Section 5.2, learned position embedding: ``PE = Embedding(position)``.

    One trainable vector per position, ``embeddings`` of shape
    ``(sequence_length, d_model)`` (the layout of
    ``keras_hub.layers.PositionEmbedding``).

    Args:
        sequence_length: int, the number of positions (the longest sequence).
        initializer: initializer for the embeddings. Default ``"glorot_uniform"``.

    Call arguments:
        inputs: ``(batch, T, d_model)`` (only its shape is used).
        start_index: int or scalar int tensor, position of the first step.
            Default 0.

    Output: ``(batch, T, d_model)``, rows ``start_index .. start_index + T - 1``.

    Example:
    >>> LearnedPositionEmbedding(sequence_length=64)(np.zeros((2, 10, 16), "float32")).shape
    (2, 10, 16)
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = check_positive_int("LearnedPositionEmbedding sequence_length", sequence_length)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        check_min_rank("LearnedPositionEmbedding", input_shape, 2, "(batch, time, d_model)")
        self._check_length(input_shape[-2], 0)
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.sequence_length, input_shape[-1]), initializer=self.initializer
        )

    def _check_length(self, length, start_index):
        if isinstance(length, int) and isinstance(start_index, int) and start_index + length > self.sequence_length:
            raise ValueError(
                f"LearnedPositionEmbedding has {self.sequence_length} positions, got a sequence of length "
                f"{length} starting at {start_index}; raise sequence_length"
            )

    def call(self, inputs, start_index=0):
        length = _sequence_length(inputs)
        self._check_length(length, start_index)
        d_model = self.embeddings.shape[-1]
        rows = ops.slice(self.embeddings, (start_index, 0), (length, d_model))
        return ops.broadcast_to(rows, ops.shape(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "sequence_length": self.sequence_length,
            "initializer": keras.initializers.serialize(self.initializer),
        }

"""Activation functions as Keras layers (textbook section 1.2).

Each layer implements the textbook formula with ``keras.ops`` and is
registered for serialization under the ``tfsuite`` package.
"""

import keras
from keras import ops

from layers.validation import check_positive_float

__all__ = ["Sigmoid", "Tanh", "ReLU", "LeakyReLU", "Swish", "get_activation"]


class _ElementwiseActivation(keras.layers.Layer):
    """Base for weightless element-wise activations: shape in = shape out."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfsuite")
class Sigmoid(_ElementwiseActivation):
    """Section 1.2, sigmoid: ``sigma(x) = 1 / (1 + e^(-x))``.

    Input shape: any. Output shape: same as input.

    Example:
    >>> Sigmoid()(np.zeros((2, 3), "float32"))  # all 0.5
    """

    def call(self, inputs):
        return 1.0 / (1.0 + ops.exp(-inputs))


@keras.saving.register_keras_serializable(package="tfsuite")
class Tanh(_ElementwiseActivation):
    """Section 1.2, tanh: ``tanh(x) = (e^x - e^(-x)) / (e^x + e^(-x))``.

    Computed as ``2 * sigma(2x) - 1``, which is algebraically the textbook
    formula but does not overflow for large ``|x|``.

    Input shape: any. Output shape: same as input.

    Example:
    >>> Tanh()(np.array([[0.0, 1.0]], "float32"))
    """

    def call(self, inputs):
        return 2.0 / (1.0 + ops.exp(-2.0 * inputs)) - 1.0


@keras.saving.register_keras_serializable(package="tfsuite")
class ReLU(_ElementwiseActivation):
    """Section 1.2, ReLU: ``ReLU(x) = max(0, x)``.

    Input shape: any. Output shape: same as input.

    Example:
    >>> ReLU()(np.array([[-1.0, 2.0]], "float32"))  # [[0, 2]]
    """

    def call(self, inputs):
        return ops.maximum(inputs, 0.0)


@keras.saving.register_keras_serializable(package="tfsuite")
class LeakyReLU(_ElementwiseActivation):
    """Section 1.2, Leaky ReLU: ``f(x) = max(alpha * x, x)`` with ``alpha < 1``.

    Args:
        alpha: float in ``[0, 1)``, slope for negative inputs. Default ``0.01``.
            The textbook's ``max`` form is only a leaky ReLU when ``alpha < 1``
            (for ``alpha > 1`` it would pick ``alpha * x`` for positive x), so
            other values are rejected.

    Input shape: any. Output shape: same as input.

    Example:
    >>> LeakyReLU(alpha=0.1)(np.array([[-1.0, 2.0]], "float32"))  # [[-0.1, 2]]
    """

    def __init__(self, alpha=0.01, **kwargs):
        super().__init__(**kwargs)
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"LeakyReLU needs 0 <= alpha < 1 (textbook section 1.2), got alpha={alpha}")
        self.alpha = alpha

    def call(self, inputs):
        return ops.maximum(self.alpha * inputs, inputs)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha}


@keras.saving.register_keras_serializable(package="tfsuite")
class Swish(_ElementwiseActivation):
    """Section 1.2, Swish: ``f(x) = x * sigma(beta * x)``.

    Args:
        beta: float, initial (or fixed) value of beta. Default ``1.0``
            (Swish-1, the same as SiLU).
        trainable_beta: bool. If True, beta is a learnable scalar weight
            (Ramachandran et al., 2017); otherwise a constant. Default False.

    Input shape: any. Output shape: same as input.

    Example:
    >>> Swish(beta=1.0, trainable_beta=True)(np.ones((2, 4), "float32"))
    """

    def __init__(self, beta=1.0, trainable_beta=False, **kwargs):
        super().__init__(**kwargs)
        self.beta_init = check_positive_float("beta", beta, allow_zero=True)
        self.trainable_beta = bool(trainable_beta)

    def build(self, input_shape):
        if self.trainable_beta:
            self.beta = self.add_weight(
                name="beta",
                shape=(),
                initializer=keras.initializers.Constant(self.beta_init),
                trainable=True,
            )
        else:
            self.beta = self.beta_init

    def call(self, inputs):
        return inputs * ops.sigmoid(ops.cast(self.beta, inputs.dtype) * inputs)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta_init, "trainable_beta": self.trainable_beta}


_BY_NAME = {
    "sigmoid": Sigmoid,
    "tanh": Tanh,
    "relu": ReLU,
    "leaky_relu": LeakyReLU,
    "swish": Swish,
}


def get_activation(name, **kwargs):
    """Return a fresh activation layer by textbook name.

    Args:
        name: one of ``sigmoid``, ``tanh``, ``relu``, ``leaky_relu``, ``swish``.
        **kwargs: passed to the layer (e.g. ``alpha`` or ``beta``).
    """
    try:
        cls = _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_BY_NAME)}") from None
    return cls(**kwargs)

"""Perceptron, fully connected layer and multilayer perceptron (textbook section 1.1).

``Dense`` is the building block the rest of tfsuite uses for classifier heads
(VGG, AlexNet, ...): it holds ``kernel`` then ``bias`` exactly like
``keras.layers.Dense``, so parameter counts and copied weights line up.
``Perceptron`` is Rosenblatt's step unit with its own learning rule, and
``MultilayerPerceptron`` stacks ``Dense`` layers; its gradients come from
backpropagation (``tf.GradientTape``), checked against finite differences in
``tests/layers/test_perceptron.py``.
"""

import keras
from keras import ops

from layers.activations import get_activation
from layers.validation import check_min_rank, check_positive_float, check_positive_int, check_rank

__all__ = ["Dense", "Perceptron", "MultilayerPerceptron"]


def _activation_layer(owner, activation, dtype_policy):
    """Resolve an activation name (or None) to a fresh tfsuite activation layer."""
    if activation is None:
        return None
    if not isinstance(activation, str):
        raise ValueError(
            f"{owner} activation must be a name such as 'relu' or None, got {activation!r}"
        )
    # Same dtype policy as the owner: Keras casts a layer's inputs to its compute
    # dtype, so a float32 activation would silently truncate a float64 Dense.
    return get_activation(activation, dtype=dtype_policy)


@keras.saving.register_keras_serializable(package="tfsuite")
class Dense(keras.layers.Layer):
    """Section 1.1, fully connected layer: ``y = activation(x W + b)``.

    Acts on the last axis, so every leading axis is kept (a rank-3
    ``(batch, time, features)`` input gives ``(batch, time, units)``). Weights
    are ``kernel`` of shape ``(features, units)`` then ``bias`` of shape
    ``(units,)``, the same order and sizes as ``keras.layers.Dense``.

    Args:
        units: int, number of output features.
        activation: str or None, a name for ``layers.activations.get_activation``
            (``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"leaky_relu"``,
            ``"swish"``); None means linear. Default None.
        use_bias: bool, whether to add ``b``. Default True.
        kernel_initializer: initializer name, instance or config for ``W``.
            Default ``"glorot_uniform"``.
        bias_initializer: initializer for ``b``. Default ``"zeros"``.
        kernel_regularizer: regularizer for ``W`` (e.g. ``"l2"``) or None.
            Default None.

    Input shape: ``(batch, ..., features)``, rank >= 2.
    Output shape: ``(batch, ..., units)``.

    Example:
    >>> Dense(3, activation="relu")(np.ones((2, 5), "float32")).shape
    (2, 3)
    """

    def __init__(
        self,
        units,
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("Dense units", units)
        self.activation = activation
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.activation_layer = _activation_layer("Dense", activation, self.dtype_policy)
        self.supports_masking = True

    def build(self, input_shape):
        check_min_rank("Dense", input_shape, 2, "(batch, ..., features)")
        in_features = input_shape[-1]
        if in_features is None:
            raise ValueError(
                f"Dense needs a known last axis (features) to size its kernel, got shape "
                f"{tuple(input_shape)}"
            )
        self.kernel = self.add_weight(
            name="kernel",
            shape=(in_features, self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer
            )
        self.input_spec = keras.InputSpec(min_ndim=2, axes={-1: in_features})

    def call(self, inputs):
        outputs = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs = ops.add(outputs, self.bias)
        if self.activation_layer is not None:
            outputs = self.activation_layer(outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "activation": self.activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class Perceptron(keras.layers.Layer):
    """Section 1.1, Rosenblatt's perceptron: ``y = 1[x w + b > 0]``.

    Each of the ``units`` outputs is an independent step unit. The step has a
    zero derivative almost everywhere, so gradient descent cannot train it:
    ``kernel`` and ``bias`` are non-trainable weights (initialised to zero)
    and are learned with the perceptron rule in ``fit_rule``,
    ``w += lr * (y - y_hat) * x`` and ``b += lr * (y - y_hat)``, applied one
    sample at a time. On a linearly separable set this makes at most
    ``(R / gamma)^2`` mistakes (Novikoff, 1962), where ``R`` bounds
    ``||(x, 1)||`` and ``gamma`` is the margin of a unit-norm separator of
    ``(x, 1)``; it then stops changing.

    Args:
        units: int, number of step units. Default 1.

    Input shape: ``(batch, features)``.
    Output shape: ``(batch, units)``, values in ``{0, 1}`` in the layer dtype.

    Example:
    >>> x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], "float32")
    >>> p = Perceptron()
    >>> p.fit_rule(x, np.array([0, 0, 0, 1]))  # logical AND; mistakes per epoch
    [1, 3, 3, 2, 1, 0]
    >>> p(x)  # [[0], [0], [0], [1]]
    """

    def __init__(self, units=1, **kwargs):
        super().__init__(**kwargs)
        self.units = check_positive_int("Perceptron units", units)

    def build(self, input_shape):
        check_rank("Perceptron", input_shape, 2, "(batch, features)")
        in_features = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel", shape=(in_features, self.units), initializer="zeros", trainable=False
        )
        self.bias = self.add_weight(
            name="bias", shape=(self.units,), initializer="zeros", trainable=False
        )
        self.input_spec = keras.InputSpec(ndim=2, axes={-1: in_features})

    def call(self, inputs):
        return ops.cast(ops.greater(self._preactivation(inputs), 0.0), self.compute_dtype)

    def _preactivation(self, inputs):
        return ops.add(ops.matmul(inputs, self.kernel), self.bias)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def fit_rule(self, x, y, learning_rate=1.0, max_epochs=100):
        """Train with the perceptron learning rule until an epoch has no mistake.

        Args:
            x: array ``(samples, features)``.
            y: array of 0/1 targets, ``(samples,)`` when ``units == 1`` or
                ``(samples, units)``.
            learning_rate: float > 0. Default 1.0. From zero weights it only
                scales ``w`` and ``b``, so predictions and the mistake count do
                not depend on it.
            max_epochs: int, passes over the data before giving up. Default 100.

        Returns:
            list of int, the number of misclassified samples (any unit wrong)
            in each epoch; it ends in 0 when the rule converged.
        """
        lr = check_positive_float("Perceptron learning_rate", learning_rate)
        max_epochs = check_positive_int("Perceptron max_epochs", max_epochs)
        x = ops.convert_to_tensor(x, dtype=self.compute_dtype)
        check_rank("Perceptron.fit_rule", x.shape, 2, "(samples, features)")
        y = ops.convert_to_tensor(y, dtype=self.compute_dtype)
        if len(y.shape) == 1 and self.units == 1:
            y = ops.expand_dims(y, -1)
        if tuple(y.shape) != (x.shape[0], self.units):
            raise ValueError(
                f"Perceptron.fit_rule expected targets of shape ({x.shape[0]},) or "
                f"({x.shape[0]}, {self.units}), got {tuple(y.shape)}"
            )
        is_binary = ops.logical_or(ops.equal(y, 0.0), ops.equal(y, 1.0))
        if not bool(ops.convert_to_numpy(ops.all(is_binary))):
            raise ValueError("Perceptron.fit_rule expects 0/1 targets")
        if not self.built:
            self.build(tuple(x.shape))

        history = []
        for _ in range(max_epochs):
            mistakes = 0
            for i in range(x.shape[0]):
                x_i, y_i = x[i : i + 1], y[i : i + 1]
                y_hat = ops.cast(ops.greater(self._preactivation(x_i), 0.0), self.compute_dtype)
                error = ops.subtract(y_i, y_hat)  # (1, units), entries in {-1, 0, 1}
                if bool(ops.convert_to_numpy(ops.any(ops.not_equal(error, 0.0)))):
                    mistakes += 1
                    self.kernel.assign_add(lr * ops.matmul(ops.transpose(x_i), error))
                    self.bias.assign_add(lr * error[0])
            history.append(mistakes)
            if mistakes == 0:
                break
        return history

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="tfsuite")
class MultilayerPerceptron(keras.Model):
    """Section 1.1, multilayer perceptron: ``h_k = f(h_(k-1) W_k + b_k)``, ``y = g(h_L W + b)``.

    A stack of tfsuite ``Dense`` layers, one per entry of ``hidden_units``,
    each followed by dropout when ``dropout > 0``, then an output ``Dense``.
    Trained by backpropagation through ``tf.GradientTape`` / ``fit``.

    Args:
        hidden_units: sequence of int, widths of the hidden layers. Default
            ``(64,)``.
        output_units: int, width of the output layer. Default 10.
        activation: str or None, hidden activation name (see ``Dense``).
            Default ``"relu"``.
        output_activation: str or None, output activation; None gives logits.
            Default None.
        dropout: float in ``[0, 1)``, dropout rate after each hidden layer
            (training only). Default 0.0.

    Input shape: ``(batch, ..., features)``.
    Output shape: ``(batch, ..., output_units)``.

    Example:
    >>> mlp = MultilayerPerceptron(hidden_units=(8,), output_units=1,
    ...                            activation="tanh", output_activation="sigmoid")
    >>> mlp(np.zeros((4, 2), "float32")).shape
    (4, 1)
    """

    def __init__(
        self,
        hidden_units=(64,),
        output_units=10,
        activation="relu",
        output_activation=None,
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(hidden_units, int):
            hidden_units = (hidden_units,)
        self.hidden_units = tuple(
            check_positive_int("MultilayerPerceptron hidden_units entry", u) for u in hidden_units
        )
        self.output_units = check_positive_int("MultilayerPerceptron output_units", output_units)
        self.activation = activation
        self.output_activation = output_activation
        self.dropout = float(dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MultilayerPerceptron dropout must be in [0, 1), got {dropout}")

        # Sublayers share this model's dtype policy so a float64 MLP is float64 throughout.
        self.hidden_layers = [
            Dense(units, activation=activation, dtype=self.dtype_policy, name=f"hidden_{i}")
            for i, units in enumerate(self.hidden_units)
        ]
        self.dropout_layers = [
            keras.layers.Dropout(self.dropout, dtype=self.dtype_policy, name=f"dropout_{i}")
            for i in range(len(self.hidden_units))
            if self.dropout > 0
        ]
        self.output_layer = Dense(
            self.output_units, activation=output_activation, dtype=self.dtype_policy, name="output"
        )

    def call(self, inputs, training=None):
        x = inputs
        for i, dense in enumerate(self.hidden_layers):
            x = dense(x)
            if self.dropout_layers:
                x = self.dropout_layers[i](x, training=training)
        return self.output_layer(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_units,)

    def get_config(self):
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "output_units": self.output_units,
            "activation": self.activation,
            "output_activation": self.output_activation,
            "dropout": self.dropout,
        }

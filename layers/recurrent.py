"""Recurrent networks (textbook chapter 3, sections 3.1-3.5).

Cells (one time step) and sequence layers for the simple RNN (3.1), LSTM (3.3)
and GRU (3.4), and the bidirectional wrapper (3.5).

Weight layout. The textbook writes each gate as one matrix acting on the
concatenation ``[h(t-1), x(t)]``. We store that matrix split in two, exactly as
Keras does, so weights copy one to one from ``keras.layers.*``:

* ``kernel``: shape ``(features, gates * units)``, the ``x(t)`` rows;
* ``recurrent_kernel``: shape ``(units, gates * units)``, the ``h(t-1)`` rows;
* ``bias``: shape ``(gates * units,)`` (only when ``use_bias``).

so ``W_g [h(t-1), x(t)] + b_g = h(t-1) @ recurrent_kernel_g + x(t) @ kernel_g + b_g``
where ``_g`` is gate g's column block. Gates are fused along the last axis, in
the order ``[i, f, C~, o]`` for the LSTM and ``[z, r, h~]`` for the GRU.

Speed. A sequence layer projects every time step's input through all gates in
one matmul before the loop (``x @ kernel + bias``); the loop (Keras's own
``while_loop``-backed ``backend.rnn``) then does one fused recurrent matmul per
step (two for the GRU, whose reset gate must be applied before its candidate
matmul).

Masks follow Keras: ``mask`` has shape ``(batch, time)``, True means keep. A
masked step leaves every state unchanged (the previous state is carried
forward) and, with ``return_sequences=True``, outputs zeros at that step.
Keras's standalone RNN layers instead repeat the previous output there unless
built with ``zero_output_for_mask=True`` (its ``Bidirectional`` forces zeros);
the non-sequence output is the last kept step's ``h`` either way.
"""

import keras
from keras import ops
from keras.src import backend as keras_backend

from layers.validation import check_positive_int, check_rank

__all__ = [
    "SimpleRNNCell",
    "LSTMCell",
    "GRUCell",
    "SimpleRNN",
    "LSTM",
    "GRU",
    "Bidirectional",
]

_LAYOUT = "(batch, time, features)"


class _RecurrentCell(keras.layers.Layer):
    """Weights and input projection shared by the three cells.

    Subclasses set ``gates`` and implement ``make_step``, which returns
    ``step(projected_t, states) -> (output, new_states)`` where ``projected_t``
    is ``x(t) @ kernel + bias``. The cell's own ``call`` is one such step, so a
    cell also works inside ``keras.layers.RNN``.
    """

    gates = 1

    def __init__(
        self,
        units,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = check_positive_int("units", units)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)

    @property
    def state_size(self):
        return [self.units]

    @property
    def output_size(self):
        return self.units

    def build(self, input_shape):
        features = input_shape[-1]
        if features is None:
            raise ValueError(
                f"{type(self).__name__} needs a known feature dimension, got input shape {tuple(input_shape)}"
            )
        width = self.gates * self.units
        self.kernel = self.add_weight(
            name="kernel", shape=(features, width), initializer=self.kernel_initializer
        )
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel", shape=(self.units, width), initializer=self.recurrent_initializer
        )
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(width,), initializer=self._bias_init())
        else:
            self.bias = None

    def _bias_init(self):
        return self.bias_initializer

    def project_inputs(self, inputs):
        """``x @ kernel + bias`` over any leading axes (all time steps at once)."""
        projected = ops.matmul(inputs, self.kernel)
        if self.use_bias:
            projected = projected + self.bias
        return projected

    def make_step(self):
        raise NotImplementedError

    def call(self, inputs, states):
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        return self.make_step()(self.project_inputs(inputs), states)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(self.recurrent_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class SimpleRNNCell(_RecurrentCell):
    """Section 3.1, simple RNN step: ``h(t) = tanh(W_hh h(t-1) + W_ih x(t) + b_h)``.

    ``kernel`` is ``W_ih`` transposed ``(features, units)``, ``recurrent_kernel``
    is ``W_hh`` transposed ``(units, units)``, ``bias`` is ``b_h``.

    Args:
        units: int, size of ``h``.
        use_bias: bool, add ``b_h``. Default True.
        kernel_initializer, recurrent_initializer, bias_initializer: Keras
            initializers. Defaults ``"glorot_uniform"``, ``"orthogonal"``, ``"zeros"``.

    Call: ``cell(x_t, [h])`` with ``x_t`` of shape ``(batch, features)`` returns
    ``(h_new, [h_new])``, ``h_new`` of shape ``(batch, units)``.

    Example:
    >>> keras.layers.RNN(SimpleRNNCell(8))(np.zeros((2, 5, 3), "float32"))  # (2, 8)
    """

    def make_step(self):
        recurrent_kernel = ops.convert_to_tensor(self.recurrent_kernel)

        def step(projected, states):
            h = ops.tanh(projected + ops.matmul(states[0], recurrent_kernel))
            return h, [h]

        return step


@keras.saving.register_keras_serializable(package="tfsuite")
class LSTMCell(_RecurrentCell):
    """Section 3.3, LSTM step.

    ``f = sigma(W_f [h(t-1), x(t)] + b_f)``, ``i = sigma(W_i [h(t-1), x(t)] + b_i)``,
    ``C~ = tanh(W_C [h(t-1), x(t)] + b_C)``, ``C(t) = f * C(t-1) + i * C~``,
    ``o = sigma(W_o [h(t-1), x(t)] + b_o)``, ``h(t) = o * tanh(C(t))``.

    Gate blocks along the last weight axis: ``[i, f, C~, o]`` (Keras's order).

    Args:
        units: int, size of ``h`` and ``C``.
        use_bias: bool, add the gate biases. Default True.
        unit_forget_bias: bool, initialize ``b_f`` to 1 (Jozefowicz et al.,
            2015) so the cell remembers by default, as Keras does. Default True.
        kernel_initializer, recurrent_initializer, bias_initializer: Keras
            initializers. Defaults ``"glorot_uniform"``, ``"orthogonal"``, ``"zeros"``.

    Call: ``cell(x_t, [h, c])`` returns ``(h_new, [h_new, c_new])``, each of
    shape ``(batch, units)``.

    Example:
    >>> keras.layers.RNN(LSTMCell(8))(np.zeros((2, 5, 3), "float32"))  # (2, 8)
    """

    gates = 4

    def __init__(self, units, unit_forget_bias=True, **kwargs):
        super().__init__(units, **kwargs)
        self.unit_forget_bias = bool(unit_forget_bias)

    @property
    def state_size(self):
        return [self.units, self.units]

    def _bias_init(self):
        if not self.unit_forget_bias:
            return self.bias_initializer
        units, base = self.units, self.bias_initializer

        def init(shape, dtype=None):
            return ops.concatenate(
                [base((units,), dtype), ops.ones((units,), dtype), base((2 * units,), dtype)]
            )

        return init

    def make_step(self):
        recurrent_kernel = ops.convert_to_tensor(self.recurrent_kernel)

        def step(projected, states):
            h, c = states
            z = projected + ops.matmul(h, recurrent_kernel)  # all four gates, one matmul
            i, f, c_tilde, o = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(c_tilde)
            h = ops.sigmoid(o) * ops.tanh(c)
            return h, [h, c]

        return step

    def get_config(self):
        return {**super().get_config(), "unit_forget_bias": self.unit_forget_bias}


@keras.saving.register_keras_serializable(package="tfsuite")
class GRUCell(_RecurrentCell):
    """Section 3.4, GRU step (textbook form).

    ``r = sigma(W_r [h(t-1), x(t)])``, ``z = sigma(W_z [h(t-1), x(t)])``,
    ``h~ = tanh(W [r * h(t-1), x(t)])``, ``h(t) = (1 - z) * h(t-1) + z * h~``.

    Gate blocks along the last weight axis: ``[z, r, h~]`` (Keras's order). The
    reset gate multiplies ``h(t-1)`` before the candidate matmul (Keras's
    ``reset_after=False``). Two differences from ``keras.layers.GRU``: the
    textbook's ``z`` weights the candidate, Keras's weights the previous state,
    so Keras's ``z`` is our ``1 - z`` (negate the z block of all three weights to
    convert, since ``sigma(-a) = 1 - sigma(a)``); the textbook has no biases,
    ``use_bias=True`` adds them in Keras's ``reset_after=False`` layout.

    Args:
        units: int, size of ``h``.
        use_bias: bool, add gate biases. Default True.
        kernel_initializer, recurrent_initializer, bias_initializer: Keras
            initializers. Defaults ``"glorot_uniform"``, ``"orthogonal"``, ``"zeros"``.

    Call: ``cell(x_t, [h])`` returns ``(h_new, [h_new])``.

    Example:
    >>> keras.layers.RNN(GRUCell(8))(np.zeros((2, 5, 3), "float32"))  # (2, 8)
    """

    gates = 3

    def make_step(self):
        units = self.units
        recurrent_kernel = ops.convert_to_tensor(self.recurrent_kernel)
        # Sliced once here, not at every step inside the loop.
        recurrent_zr = recurrent_kernel[:, : 2 * units]
        recurrent_h = recurrent_kernel[:, 2 * units :]

        def step(projected, states):
            h = states[0]
            zr = ops.sigmoid(projected[:, : 2 * units] + ops.matmul(h, recurrent_zr))
            z, r = zr[:, :units], zr[:, units:]
            h_tilde = ops.tanh(projected[:, 2 * units :] + ops.matmul(r * h, recurrent_h))
            h = h + z * (h_tilde - h)  # (1 - z) * h + z * h~
            return h, [h]

        return step


class _RecurrentSequence(keras.layers.Layer):
    """Runs a cell over the time axis; shared by SimpleRNN, LSTM and GRU."""

    def __init__(
        self,
        cell,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.supports_masking = True

    @property
    def units(self):
        return self.cell.units

    @property
    def output_size(self):
        return self.cell.output_size

    def _check_inputs(self, shape):
        check_rank(type(self).__name__, shape, 3, _LAYOUT)

    def build(self, input_shape):
        self._check_inputs(input_shape)
        if not self.cell.built:
            self.cell.build((input_shape[0], input_shape[-1]))

    def call(self, inputs, initial_state=None, mask=None):
        name = type(self).__name__
        self._check_inputs(inputs.shape)
        states = self._initial_states(inputs, initial_state)
        if mask is not None:
            if len(mask.shape) != 2:
                raise ValueError(f"{name} expected a mask of shape (batch, time), got shape {tuple(mask.shape)}")
            mask = ops.cast(mask, "bool")
        # Time-major when the length is static, so the loop never transposes
        # the ``gates * units`` wide projection, only the narrow input.
        # backend.rnn reads an unknown length off axis 1, the batch axis when
        # time-major, so a dynamic length stays batch-major.
        time_major = inputs.shape[1] is not None
        if time_major:
            projected = self.cell.project_inputs(ops.transpose(inputs, (1, 0, 2)))
        else:
            projected = self.cell.project_inputs(inputs)
        last, outputs, states = keras_backend.rnn(
            self.cell.make_step(),
            projected,
            states,
            go_backwards=self.go_backwards,
            mask=None if mask is None else (ops.transpose(mask, (1, 0)) if time_major else mask),
            time_major=time_major,
            input_length=inputs.shape[1],
            zero_output_for_mask=self.return_sequences,
            return_all_outputs=self.return_sequences,
        )
        if self.return_sequences:
            if time_major:
                outputs = ops.transpose(outputs, (1, 0, 2))
            output = self._project_outputs(outputs, mask)
        else:
            output = self._project_outputs(last, None)
        if self.return_state:
            return [output, *states]
        return output

    def _project_outputs(self, outputs, mask):
        return outputs

    def _initial_states(self, inputs, initial_state):
        sizes = self.cell.state_size
        if initial_state is None:
            batch = ops.shape(inputs)[0]
            return [ops.zeros((batch, size), dtype=self.compute_dtype) for size in sizes]
        initial_state = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        if len(initial_state) != len(sizes):
            raise ValueError(
                f"{type(self).__name__} expected initial_state as a list of {len(sizes)} tensors of "
                f"shape (batch, {self.units}), got {len(initial_state)}"
            )
        return [ops.cast(s, self.compute_dtype) for s in initial_state]

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        batch, time = inputs_shape[0], inputs_shape[1]
        if self.return_sequences:
            output_shape = (batch, time, self.output_size)
        else:
            output_shape = (batch, self.output_size)
        if self.return_state:
            return [output_shape, *[(batch, size) for size in self.cell.state_size]]
        return output_shape

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * len(self.cell.state_size)
        return output_mask

    def get_config(self):
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key, None)
        return {
            **super().get_config(),
            **cell_config,
            "return_sequences": self.return_sequences,
            "return_state": self.return_state,
            "go_backwards": self.go_backwards,
        }


_SEQUENCE_ARGS = """
        return_sequences: bool, return ``h(t)`` for every step ``(batch, time,
            units)`` instead of the last ``(batch, units)``. Default False.
        return_state: bool, also return the final states. Default False.
        go_backwards: bool, read the sequence from ``t = T`` down to 1 and, with
            ``return_sequences``, return the outputs in that reversed order (as
            Keras does). Default False.
        use_bias: bool. Default True.
        kernel_initializer, recurrent_initializer, bias_initializer: Keras
            initializers. Defaults ``"glorot_uniform"``, ``"orthogonal"``, ``"zeros"``.

    Call args:
        inputs: ``(batch, time, features)``.
        initial_state: optional list of the initial states, each ``(batch, units)``.
        mask: optional ``(batch, time)`` bool, True means keep (Keras's
            ``Masking``/``Embedding(mask_zero=True)`` pass it automatically).
            Masked steps carry the states forward and output zeros.
"""


@keras.saving.register_keras_serializable(package="tfsuite")
class SimpleRNN(_RecurrentSequence):
    __doc__ = """Section 3.1, simple RNN: ``h(t) = tanh(W_hh h(t-1) + W_ih x(t) + b_h)``, ``y(t) = W_hy h(t) + b_y``.

    Without ``output_units`` the layer returns ``h(t)`` (like Keras's SimpleRNN);
    with it, it returns ``y(t)`` and keeps ``h`` as the state.

    Args:
        units: int, size of ``h``.
        output_units: int or None. If set, adds ``W_hy`` and ``b_y`` (when
            ``use_bias``) as the ``output`` Dense sublayer. Default None.""" + _SEQUENCE_ARGS + """
    Output: ``(batch, units or output_units)``, or ``(batch, time, ...)`` with
    ``return_sequences``; with ``return_state``, a list ``[output, h]``.

    Example:
    >>> SimpleRNN(16, return_sequences=True)(np.zeros((2, 5, 3), "float32"))  # (2, 5, 16)
    """

    def __init__(
        self,
        units,
        output_units=None,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        cell = SimpleRNNCell(
            units,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            name="cell",
        )
        super().__init__(cell, return_sequences, return_state, go_backwards, **kwargs)
        self.output_units = None if output_units is None else check_positive_int("output_units", output_units)
        self.output_projection = None
        if self.output_units:
            # y(t) = W_hy h(t) + b_y; a sublayer so its weights follow the cell's.
            self.output_projection = keras.layers.Dense(
                self.output_units,
                use_bias=cell.use_bias,
                kernel_initializer=cell.kernel_initializer,
                bias_initializer=cell.bias_initializer,
                name="output",
            )

    @property
    def output_size(self):
        return self.output_units or self.units

    def build(self, input_shape):
        super().build(input_shape)
        if self.output_projection is not None and not self.output_projection.built:
            self.output_projection.build((None, self.units))

    def _project_outputs(self, outputs, mask):
        if self.output_projection is None:
            return outputs
        y = self.output_projection(outputs)
        if mask is not None:  # keep masked steps at zero, not at b_y
            keep = mask
            if self.go_backwards:
                keep = ops.flip(keep, axis=1)
            y = ops.where(keep[..., None], y, ops.zeros_like(y))
        return y

    def get_config(self):
        return {**super().get_config(), "output_units": self.output_units}


@keras.saving.register_keras_serializable(package="tfsuite")
class LSTM(_RecurrentSequence):
    __doc__ = """Section 3.3, LSTM over a sequence (cell equations in ``LSTMCell``):
    ``C(t) = f * C(t-1) + i * C~``, ``h(t) = o * tanh(C(t))``.

    Args:
        units: int, size of ``h`` and ``C``.
        unit_forget_bias: bool, initialize the forget-gate bias to 1. Default True.""" + _SEQUENCE_ARGS + """
    Output: ``(batch, units)`` or ``(batch, time, units)``; with ``return_state``
    a list ``[output, h, C]``.

    Example:
    >>> LSTM(32)(np.zeros((4, 7, 3), "float32"))  # (4, 32)
    """

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        use_bias=True,
        unit_forget_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        cell = LSTMCell(
            units,
            unit_forget_bias=unit_forget_bias,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            name="cell",
        )
        super().__init__(cell, return_sequences, return_state, go_backwards, **kwargs)


@keras.saving.register_keras_serializable(package="tfsuite")
class GRU(_RecurrentSequence):
    __doc__ = """Section 3.4, GRU over a sequence (textbook equations, see ``GRUCell``):
    ``h(t) = (1 - z) * h(t-1) + z * tanh(W [r * h(t-1), x(t)])``.

    Equals ``keras.layers.GRU(reset_after=False)`` once the z block of its
    weights is negated (Keras's ``z`` is the textbook's ``1 - z``).

    Args:
        units: int, size of ``h``.""" + _SEQUENCE_ARGS + """
    Output: ``(batch, units)`` or ``(batch, time, units)``; with ``return_state``
    a list ``[output, h]``.

    Example:
    >>> GRU(32, return_sequences=True)(np.zeros((4, 7, 3), "float32"))  # (4, 7, 32)
    """

    def __init__(
        self,
        units,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        cell = GRUCell(
            units,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            name="cell",
        )
        super().__init__(cell, return_sequences, return_state, go_backwards, **kwargs)


_MERGE_MODES = ("concat", "sum", "ave", "mul", None)


@keras.saving.register_keras_serializable(package="tfsuite")
class Bidirectional(keras.layers.Layer):
    """Section 3.5, bidirectional RNN: ``h(t) = [h_forward(t); h_backward(t)]``.

    The backward RNN reads ``x(T), ..., x(t)``: it is a copy of ``layer`` built
    from its config with ``go_backwards`` flipped (own weights). With
    ``return_sequences`` its outputs are reversed back so both directions line
    up in time before merging.

    Args:
        layer: a tfsuite ``SimpleRNN``, ``LSTM`` or ``GRU`` (unbuilt or built;
            the backward copy gets fresh weights).
        merge_mode: ``"concat"`` (textbook), ``"sum"``, ``"ave"``, ``"mul"``, or
            None to return ``[forward, backward]``. Default ``"concat"``.

    Call args: ``inputs`` ``(batch, time, features)``; optional ``mask``
    ``(batch, time)`` (True = keep); optional ``initial_state``, the forward
    layer's states followed by the backward layer's.

    Output: ``(batch, [time,] 2 * units)`` for concat, ``(batch, [time,] units)``
    otherwise; with ``return_state``, ``[output, *forward_states, *backward_states]``.

    Example:
    >>> Bidirectional(LSTM(16, return_sequences=True))(np.zeros((2, 5, 3), "float32"))  # (2, 5, 32)
    """

    def __init__(self, layer, merge_mode="concat", **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if not isinstance(layer, _RecurrentSequence):
            raise ValueError(
                "Bidirectional wraps a tfsuite SimpleRNN, LSTM or GRU layer, "
                f"got {type(layer).__name__}"
            )
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {list(_MERGE_MODES)}, got {merge_mode!r}")
        self.merge_mode = merge_mode
        self.forward_layer = layer
        config = layer.get_config()
        config["go_backwards"] = not layer.go_backwards
        config["name"] = f"backward_{layer.name}"
        self.backward_layer = type(layer).from_config(config)
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.supports_masking = True

    def build(self, input_shape):
        check_rank("Bidirectional", input_shape, 3, _LAYOUT)
        for layer in (self.forward_layer, self.backward_layer):
            if not layer.built:  # a deserialized forward layer arrives built
                layer.build(input_shape)

    def call(self, inputs, initial_state=None, mask=None):
        check_rank("Bidirectional", inputs.shape, 3, _LAYOUT)
        forward_state = backward_state = None
        if initial_state is not None:
            n = len(self.forward_layer.cell.state_size)
            initial_state = list(initial_state)
            if len(initial_state) != 2 * n:
                raise ValueError(
                    f"Bidirectional expected initial_state as {2 * n} tensors (forward states, then "
                    f"backward states), got {len(initial_state)}"
                )
            forward_state, backward_state = initial_state[:n], initial_state[n:]
        y = self.forward_layer(inputs, initial_state=forward_state, mask=mask)
        y_rev = self.backward_layer(inputs, initial_state=backward_state, mask=mask)
        states = []
        if self.return_state:
            y, *forward_states = y
            y_rev, *backward_states = y_rev
            states = forward_states + backward_states
        if self.return_sequences:
            y_rev = ops.flip(y_rev, axis=1)
        if self.merge_mode == "concat":
            output = ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = [y, y_rev]
        if self.return_state:
            outputs = output if isinstance(output, list) else [output]
            return outputs + states
        return output

    def compute_output_shape(self, inputs_shape, initial_state_shape=None):
        shape = self.forward_layer.compute_output_shape(inputs_shape)
        state_shapes = []
        if self.return_state:
            shape, *state_shapes = shape
            state_shapes = state_shapes * 2
        if self.merge_mode == "concat":
            outputs = [(*shape[:-1], 2 * shape[-1])]
        elif self.merge_mode is None:
            outputs = [shape, shape]
        else:
            outputs = [shape]
        if self.return_state or self.merge_mode is None:
            return outputs + state_shapes
        return outputs[0]

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        masks = [output_mask, output_mask] if self.merge_mode is None else [output_mask]
        if self.return_state:
            return masks + [None] * (2 * len(self.forward_layer.cell.state_size))
        return masks if self.merge_mode is None else output_mask

    def get_config(self):
        return {
            **super().get_config(),
            "layer": keras.saving.serialize_keras_object(self.forward_layer),
            "merge_mode": self.merge_mode,
        }

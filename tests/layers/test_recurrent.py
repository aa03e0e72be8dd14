"""Chapter 3: simple RNN, LSTM, GRU and the bidirectional wrapper.

Ground truth is (a) a NumPy step loop written from the textbook equations with
each gate as one matrix on ``[h(t-1), x(t)]``, and (b) the Keras built-ins with
copied weights. Keras's GRU puts its update gate on the previous state, so its
``z`` is the textbook's ``1 - z``; since ``sigma(-a) = 1 - sigma(a)``, copying
our GRU into ``keras.layers.GRU(reset_after=False)`` negates the z block (the
first ``units`` columns) of the kernel, the recurrent kernel and the bias.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from layers.recurrent import GRU, LSTM, Bidirectional, GRUCell, LSTMCell, SimpleRNN, SimpleRNNCell
from tests.layer_harness import run_layer_contract, seeded_array

BATCH, TIME, FEATURES, UNITS = 3, 5, 4, 6
X = seeded_array(BATCH, TIME, FEATURES, seed=1)
# Row 0 unpadded, row 1 right-padded, row 2 has gaps (Keras accepts any mask
# on the non-cuDNN path).
MASK = np.array(
    [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 1, 0, 1, 1]],
    dtype=bool,
)
KINDS = {"simple_rnn": SimpleRNN, "lstm": LSTM, "gru": GRU}


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


# ---------------------------------------------------------------- references


def textbook_loop(kind, weights, x, mask=None, go_backwards=False, initial_state=None, output_units=None):
    """The textbook equations, one step at a time, in float64.

    ``weights`` is our layer's ``get_weights()``. Each gate matrix is rebuilt in
    the textbook's form ``W_g`` acting on ``[h(t-1); x(t)]`` from the
    ``recurrent_kernel`` (h rows) and ``kernel`` (x rows) column blocks.
    Returns ``(outputs over time in reading order, final states)``; masked steps
    keep the states and output zeros.
    """
    weights = [np.asarray(w, np.float64) for w in weights]
    kernel, recurrent_kernel = weights[0], weights[1]
    gates = {"simple_rnn": 1, "lstm": 4, "gru": 3}[kind]
    units = recurrent_kernel.shape[0]
    bias = weights[2] if len(weights) > 2 and weights[2].ndim == 1 else np.zeros(gates * units)
    blocks = lambda m: np.split(m, gates, axis=-1)  # noqa: E731
    # W_g: (units, units + features), acting on [h; x].
    W = [np.concatenate([rk, k], axis=0).T for rk, k in zip(blocks(recurrent_kernel), blocks(kernel))]
    b = blocks(bias)

    batch, time, _ = x.shape
    if initial_state is None:
        states = [np.zeros((batch, units)) for _ in range(2 if kind == "lstm" else 1)]
    else:
        states = [np.asarray(s, np.float64) for s in initial_state]
    mask = np.ones((batch, time), bool) if mask is None else mask
    outputs = []
    steps = range(time - 1, -1, -1) if go_backwards else range(time)
    for t in steps:
        h = states[0]
        x_t = x[:, t].astype(np.float64)
        hx = np.concatenate([h, x_t], axis=-1)
        if kind == "simple_rnn":
            # h(t) = tanh(W_hh h(t-1) + W_ih x(t) + b_h): W[0] is [W_hh, W_ih].
            new = [np.tanh(hx @ W[0].T + b[0])]
        elif kind == "lstm":
            W_i, W_f, W_C, W_o = W
            b_i, b_f, b_C, b_o = b
            f = sigmoid(hx @ W_f.T + b_f)
            i = sigmoid(hx @ W_i.T + b_i)
            C_tilde = np.tanh(hx @ W_C.T + b_C)
            C = f * states[1] + i * C_tilde
            o = sigmoid(hx @ W_o.T + b_o)
            new = [o * np.tanh(C), C]
        else:
            W_z, W_r, W_h = W
            b_z, b_r, b_h = b
            r = sigmoid(hx @ W_r.T + b_r)
            z = sigmoid(hx @ W_z.T + b_z)
            h_tilde = np.tanh(np.concatenate([r * h, x_t], axis=-1) @ W_h.T + b_h)
            new = [(1 - z) * h + z * h_tilde]
        keep = mask[:, t : t + 1]
        states = [np.where(keep, n, s) for n, s in zip(new, states)]
        outputs.append(np.where(keep, states[0], 0.0))
    outputs = np.stack(outputs, axis=1)
    if output_units:
        y = outputs @ weights[3] + (weights[4] if len(weights) > 4 else 0.0)
        reading_mask = mask[:, ::-1] if go_backwards else mask
        outputs = np.where(reading_mask[..., None], y, 0.0)
    return outputs, states


def layer_reference(layer, x, mask=None, initial_state=None):
    """What ``layer(x)`` must return, from ``textbook_loop`` with its weights."""
    sequence, states = textbook_loop(
        _kind(layer),
        layer.get_weights(),
        x,
        mask=mask,
        go_backwards=layer.go_backwards,
        initial_state=initial_state,
        output_units=getattr(layer, "output_units", None),
    )
    if layer.return_sequences:
        output = sequence
    elif getattr(layer, "output_units", None):
        w = layer.get_weights()
        output = states[0] @ w[3] + (w[4] if len(w) > 4 else 0.0)
    else:
        output = states[0]
    return [output, *states] if layer.return_state else output


def _kind(layer):
    return {SimpleRNN: "simple_rnn", LSTM: "lstm", GRU: "gru"}[type(layer)]


def gru_weights_for_keras(weights, units):
    """Our GRU's weights in Keras's convention: negate the z block (see module doc)."""
    converted = [np.array(w) for w in weights]
    for w in converted:
        w[..., :units] *= -1.0
    return converted


def keras_twin(layer, features=FEATURES, **overrides):
    """The Keras built-in configured like ``layer``, holding the same weights."""
    kwargs = dict(
        units=layer.units,
        return_sequences=layer.return_sequences,
        return_state=layer.return_state,
        go_backwards=layer.go_backwards,
        use_bias=layer.cell.use_bias,
        # Keras's standalone RNNs repeat the previous output at masked steps
        # unless told otherwise; ours (like Keras's Bidirectional) output zeros.
        zero_output_for_mask=layer.return_sequences,
    )
    kwargs.update(overrides)
    weights = layer.get_weights()
    kind = _kind(layer)
    if kind == "simple_rnn":
        twin = keras.layers.SimpleRNN(**kwargs)
    elif kind == "lstm":
        twin = keras.layers.LSTM(**kwargs)
    else:
        twin = keras.layers.GRU(reset_after=False, **kwargs)
        weights = gru_weights_for_keras(weights, layer.units)
    twin.build((None, None, features))
    twin.set_weights(weights)
    return twin


def _np(x):
    if isinstance(x, (list, tuple)):
        return [_np(v) for v in x]
    return keras.ops.convert_to_numpy(x)


def _assert_close(actual, expected, atol=1e-5):
    actual, expected = _np(actual), _np(expected)
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, atol=atol, rtol=1e-5)
    else:
        np.testing.assert_allclose(actual, expected, atol=atol, rtol=1e-5)


def _random_weights(layer, seed=0):
    """Replace the (often zero) initial biases so the parity checks exercise them."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype("float32") for w in layer.get_weights()])


# -------------------------------------------------------------- the contract


@pytest.mark.parametrize(
    "make_layer, expected_shape",
    [
        (lambda: SimpleRNN(UNITS, output_units=2, return_sequences=True), (BATCH, TIME, 2)),
        (lambda: LSTM(UNITS, return_state=True), [(BATCH, UNITS)] * 3),
        (lambda: GRU(UNITS, return_sequences=True, go_backwards=True), (BATCH, TIME, UNITS)),
    ],
    ids=["simple_rnn_output_units", "lstm_return_state", "gru_backwards_sequences"],
)
def test_sequence_layer_contract_against_textbook_loop(make_layer, expected_shape):
    run_layer_contract(
        make_layer,
        X,
        expected_output_shape=expected_shape,
        reference=layer_reference,
        reference_uses_layer=True,
    )


def test_bidirectional_contract_against_textbook_loops():
    def reference(layer, x):
        forward = layer_reference(layer.forward_layer, x)
        backward = layer_reference(layer.backward_layer, x)[:, ::-1]  # re-align in time
        return np.concatenate([forward, backward], axis=-1)

    report = run_layer_contract(
        lambda: Bidirectional(GRU(UNITS, return_sequences=True)),
        X,
        expected_output_shape=(BATCH, TIME, 2 * UNITS),
        reference=reference,
        reference_uses_layer=True,
    )
    assert report.layer.backward_layer.go_backwards and not report.layer.forward_layer.go_backwards


@pytest.mark.parametrize("cell_class", [SimpleRNNCell, LSTMCell, GRUCell], ids=lambda c: c.__name__)
def test_cell_inside_keras_rnn_contract(cell_class):
    # A cell is one step: keras.layers.RNN drives it (and serializes it via its config).
    kind = {SimpleRNNCell: "simple_rnn", LSTMCell: "lstm", GRUCell: "gru"}[cell_class]
    run_layer_contract(
        lambda: keras.layers.RNN(cell_class(UNITS), return_sequences=True),
        X,
        expected_output_shape=(BATCH, TIME, UNITS),
        reference=lambda layer, x: textbook_loop(kind, layer.get_weights(), x)[0],
        reference_uses_layer=True,
        check_saved_model=False,  # the sequence-layer contracts cover export
    )


# ------------------------------------------------------- parity with Keras


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_parity_with_keras_builtin(kind, return_sequences, masked, go_backwards):
    layer = KINDS[kind](UNITS, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)
    layer.build(X.shape)
    _random_weights(layer)
    twin = keras_twin(layer)
    mask = MASK if masked else None
    ours = layer(X, mask=mask)
    _assert_close(ours, twin(X, mask=mask))
    _assert_close(ours, layer_reference(layer, X, mask=mask))


@pytest.mark.parametrize("kind", list(KINDS))
def test_parity_with_keras_through_masking_layer(kind):
    # The mask comes from keras.layers.Masking (zero padding), propagated by Keras.
    padded = X * MASK[..., None]
    layer = KINDS[kind](UNITS, return_sequences=True)
    layer.build(X.shape)
    _random_weights(layer, seed=2)
    twin = keras_twin(layer)

    def model(rnn):
        inputs = keras.Input((TIME, FEATURES))
        return keras.Model(inputs, rnn(keras.layers.Masking(0.0)(inputs)))

    ours = model(layer)(padded)
    _assert_close(ours, model(twin)(padded))
    assert np.all(_np(ours)[~MASK] == 0.0), "masked steps must output zeros"


@pytest.mark.parametrize("kind", list(KINDS))
def test_initial_state_parity_with_keras(kind):
    layer = KINDS[kind](UNITS, return_state=True)
    layer.build(X.shape)
    _random_weights(layer, seed=3)
    states = [seeded_array(BATCH, UNITS, seed=10 + i) for i in range(2 if kind == "lstm" else 1)]
    ours = layer(X, initial_state=states)
    _assert_close(ours, keras_twin(layer)(X, initial_state=states))
    _assert_close(ours, layer_reference(layer, X, initial_state=states))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("merge_mode", ["concat", "sum", "ave", "mul", None])
def test_bidirectional_parity_with_keras(kind, merge_mode):
    ours = Bidirectional(KINDS[kind](UNITS, return_sequences=True, return_state=True), merge_mode=merge_mode)
    ours.build(X.shape)
    _random_weights(ours, seed=4)
    forward = keras_twin(ours.forward_layer, zero_output_for_mask=False)
    theirs = keras.layers.Bidirectional(forward, merge_mode=merge_mode)
    theirs.build(X.shape)
    weights = ours.get_weights()  # forward weights, then backward, in both layers
    if kind == "gru":
        half = len(weights) // 2
        weights = gru_weights_for_keras(weights[:half], UNITS) + gru_weights_for_keras(weights[half:], UNITS)
    theirs.set_weights(weights)
    # Keras's Bidirectional forces zero outputs at masked steps, as ours do.
    _assert_close(ours(X, mask=MASK), list(theirs(X, mask=MASK)))


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
def test_bidirectional_lstm_parity_with_keras_last_output(return_sequences):
    ours = Bidirectional(LSTM(UNITS, return_sequences=return_sequences))
    ours.build(X.shape)
    _random_weights(ours, seed=5)
    theirs = keras.layers.Bidirectional(keras.layers.LSTM(UNITS, return_sequences=return_sequences))
    theirs.build(X.shape)
    theirs.set_weights(ours.get_weights())
    _assert_close(ours(X), theirs(X))
    _assert_close(ours(X, mask=MASK), theirs(X, mask=MASK))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_gradients_match_keras(kind):
    layer = KINDS[kind](UNITS, return_sequences=True)
    layer.build(X.shape)
    _random_weights(layer, seed=6)
    twin = keras_twin(layer)
    target = seeded_array(BATCH, TIME, UNITS, seed=7)

    def grads(rnn):
        x = tf.constant(X)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum((rnn(x, mask=MASK) - target) ** 2)
        return [g.numpy() for g in tape.gradient(loss, [x, *rnn.trainable_weights])]

    ours, theirs = grads(layer), grads(twin)
    if kind == "gru":  # d/d(-w) = -d/dw on the negated z block
        theirs = theirs[:1] + gru_weights_for_keras(theirs[1:], UNITS)
    for a, e in zip(ours, theirs):
        np.testing.assert_allclose(a, e, atol=1e-4, rtol=1e-4)


def test_simple_rnn_output_projection_equals_keras_simple_rnn_plus_dense():
    layer = SimpleRNN(UNITS, output_units=2, return_sequences=True)
    layer.build(X.shape)
    _random_weights(layer, seed=8)
    kernel, recurrent_kernel, bias, output_kernel, output_bias = layer.get_weights()
    rnn = keras.layers.SimpleRNN(UNITS, return_sequences=True)
    rnn.build(X.shape)
    rnn.set_weights([kernel, recurrent_kernel, bias])
    dense = keras.layers.Dense(2)
    dense.build((None, UNITS))
    dense.set_weights([output_kernel, output_bias])
    _assert_close(layer(X), dense(rnn(X)))


@pytest.mark.parametrize("go_backwards", [False, True], ids=["forward", "backwards"])
def test_simple_rnn_output_projection_is_zero_at_masked_steps(go_backwards):
    layer = SimpleRNN(UNITS, output_units=2, return_sequences=True, return_state=True, go_backwards=go_backwards)
    layer.build(X.shape)
    _random_weights(layer, seed=15)
    ours = layer(X, mask=MASK)
    _assert_close(ours, layer_reference(layer, X, mask=MASK))
    reading_mask = MASK[:, ::-1] if go_backwards else MASK
    assert np.all(_np(ours[0])[~reading_mask] == 0.0), "masked steps must output zeros, not b_y"


@pytest.mark.parametrize("cell_class", [SimpleRNNCell, LSTMCell, GRUCell], ids=lambda c: c.__name__)
def test_cell_step_matches_keras_cell(cell_class):
    cell = cell_class(UNITS)
    cell.build((None, FEATURES))
    _random_weights(cell, seed=9)
    n_states = 2 if cell_class is LSTMCell else 1
    states = [seeded_array(BATCH, UNITS, seed=20 + i) for i in range(n_states)]
    x_t = X[:, 0]
    if cell_class is SimpleRNNCell:
        twin, weights = keras.layers.SimpleRNNCell(UNITS), cell.get_weights()
    elif cell_class is LSTMCell:
        twin, weights = keras.layers.LSTMCell(UNITS), cell.get_weights()
    else:
        twin = keras.layers.GRUCell(UNITS, reset_after=False)
        weights = gru_weights_for_keras(cell.get_weights(), UNITS)
    twin.build((None, FEATURES))
    twin.set_weights(weights)
    out, new_states = cell(x_t, states)
    ref_out, ref_states = twin(x_t, states)
    _assert_close([out, *new_states], [ref_out, *ref_states])


def test_sequence_layer_equals_its_cell_in_keras_rnn():
    layer = LSTM(UNITS, return_sequences=True)
    layer.build(X.shape)
    _random_weights(layer, seed=11)
    driven = keras.layers.RNN(LSTMCell(UNITS), return_sequences=True)
    driven.build(X.shape)
    driven.set_weights(layer.get_weights())
    _assert_close(layer(X), driven(X))


def test_unknown_time_length_matches_static_length():
    # A dynamic time axis takes the batch-major path; results must not change.
    layer = GRU(UNITS, return_sequences=True, go_backwards=True)
    layer.build(X.shape)
    _random_weights(layer, seed=12)
    expected = _np(layer(X, mask=MASK))
    dynamic = tf.function(
        lambda x, m: layer(x, mask=m),
        input_signature=[
            tf.TensorSpec((BATCH, None, FEATURES), tf.float32),
            tf.TensorSpec((BATCH, None), tf.bool),
        ],
    )
    _assert_close(dynamic(X, MASK), expected)
    longer = seeded_array(BATCH, 2 * BATCH + 1, FEATURES, seed=13)  # more steps than the batch
    _assert_close(dynamic(longer, np.ones(longer.shape[:2], bool)), layer_reference(layer, longer))


def test_lstm_forget_bias_starts_at_one():
    layer = LSTM(UNITS)
    layer.build(X.shape)
    bias = layer.cell.bias.numpy()
    np.testing.assert_array_equal(bias[UNITS : 2 * UNITS], 1.0)
    np.testing.assert_array_equal(np.delete(bias, np.s_[UNITS : 2 * UNITS]), 0.0)
    unbiased = LSTM(UNITS, use_bias=False)
    unbiased.build(X.shape)
    assert len(unbiased.weights) == 2
    _assert_close(unbiased(X), layer_reference(unbiased, X))


# ------------------------------------------------------------------ training


def test_lstm_overfits_sum_sign_of_short_sequences():
    # Label: is the sum of the sequence positive? Needs memory over all steps.
    x = seeded_array(64, 6, 1, seed=14)
    y = (x.sum(axis=(1, 2)) > 0).astype("float32")[:, None]
    model = keras.Sequential(
        [keras.Input((6, 1)), LSTM(12), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.03), loss="binary_crossentropy", metrics=["accuracy"])
    before = model.evaluate(x, y, verbose=0)[1]
    # 150 full-batch steps as one epoch over the tiled batch: no per-epoch overhead.
    steps = 150
    model.fit(np.tile(x, (steps, 1, 1)), np.tile(y, (steps, 1)), batch_size=64, shuffle=False, verbose=0)
    after = model.evaluate(x, y, verbose=0)[1]
    assert after >= 0.97, (before, after)


# -------------------------------------------------------------------- errors


@pytest.mark.parametrize("layer_class", [SimpleRNN, LSTM, GRU])
def test_wrong_rank_is_a_clear_error(layer_class):
    name = layer_class.__name__
    message = rf"{name} expected inputs of rank 3 \(batch, time, features\), got shape \(4, 7\)"
    with pytest.raises(ValueError, match=message):
        layer_class(UNITS)(np.zeros((4, 7), "float32"))
    built = layer_class(UNITS)
    built(X)
    with pytest.raises(ValueError, match=message):
        built(np.zeros((4, 7), "float32"))


def test_bidirectional_wrong_rank_is_a_clear_error():
    message = r"Bidirectional expected inputs of rank 3 \(batch, time, features\), got shape \(4, 7\)"
    with pytest.raises(ValueError, match=message):
        Bidirectional(LSTM(UNITS))(np.zeros((4, 7), "float32"))


def test_wrong_mask_rank_is_a_clear_error():
    with pytest.raises(ValueError, match=r"LSTM expected a mask of shape \(batch, time\)"):
        LSTM(UNITS)(X, mask=MASK[..., None])


def test_wrong_initial_state_count_is_a_clear_error():
    with pytest.raises(ValueError, match="LSTM expected initial_state as a list of 2 tensors"):
        LSTM(UNITS)(X, initial_state=[np.zeros((BATCH, UNITS), "float32")])
    with pytest.raises(ValueError, match="Bidirectional expected initial_state as 2 tensors"):
        Bidirectional(GRU(UNITS))(X, initial_state=[np.zeros((BATCH, UNITS), "float32")])


def test_bad_constructor_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="units must be a positive integer"):
        LSTM(0)
    with pytest.raises(ValueError, match="output_units must be a positive integer"):
        SimpleRNN(4, output_units=-1)
    with pytest.raises(ValueError, match="merge_mode must be one of"):
        Bidirectional(GRU(UNITS), merge_mode="max")
    with pytest.raises(ValueError, match="Bidirectional wraps a tfsuite SimpleRNN, LSTM or GRU layer, got LSTM"):
        Bidirectional(keras.layers.LSTM(UNITS))

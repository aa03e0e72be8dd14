import os

import keras
import numpy as np
import pytest

from layers.optimizers import SGD, Adam
from layers.perceptron import Dense
from tests.layer_harness import seeded_array

# Three variables of different shapes; the third gets gradients ~1e-4 so that
# v ~ 1e-8 is below epsilon and the textbook's epsilon-inside-the-root matters.
SHAPES = [(3, 2), (4,), (2,)]
GRAD_SCALES = [1.0, 1.0, 1e-4]
STEPS = 5
SGD_CASES, SGD_IDS = [(0.0, False), (0.9, False), (0.9, True)], ["plain", "momentum", "nesterov"]


def initial_params(dtype):
    return [seeded_array(*shape, seed=10 + i, dtype=dtype) for i, shape in enumerate(SHAPES)]


def gradient_sequence(dtype, steps=STEPS, min_abs=0.0):
    """Known gradients per step; ``min_abs`` keeps entries away from zero."""
    rng = np.random.default_rng(42)
    sequence = []
    for _ in range(steps):
        grads = []
        for shape, scale in zip(SHAPES, GRAD_SCALES):
            g = rng.standard_normal(shape)
            g = np.sign(g) * np.maximum(np.abs(g), min_abs)
            grads.append((g * scale).astype(dtype))
        sequence.append(grads)
    if min_abs == 0:
        sequence[0][1][0] = 0.0  # a zero gradient entry: m = v = 0 must give a zero step
    return sequence


# ------------------------------------------------------- NumPy references


def numpy_sgd(params, grads_seq, lr, momentum=0.0, nesterov=False):
    """Section 1.4 SGD; momentum/Nesterov as written in keras/src/optimizers/sgd.py."""
    params = [p.astype("float64") for p in params]
    velocity = [np.zeros_like(p) for p in params]
    history = []
    for grads in grads_seq:
        for i, g in enumerate(grads):
            g = g.astype("float64")
            if momentum == 0:
                params[i] = params[i] - lr * g
                continue
            velocity[i] = momentum * velocity[i] - lr * g
            if nesterov:
                params[i] = params[i] + momentum * velocity[i] - lr * g
            else:
                params[i] = params[i] + velocity[i]
        history.append(([p.copy() for p in params], [v.copy() for v in velocity]))
    return history


def numpy_adam(params, grads_seq, lr, beta_1, beta_2, epsilon, variant):
    """Textbook Adam (no bias correction, eps inside sqrt) or Kingma & Ba Algorithm 1."""
    params = [p.astype("float64") for p in params]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    history = []
    for t, grads in enumerate(grads_seq, start=1):
        for i, g in enumerate(grads):
            g = g.astype("float64")
            m[i] = beta_1 * m[i] + (1 - beta_1) * g
            v[i] = beta_2 * v[i] + (1 - beta_2) * g**2
            if variant == "textbook":
                params[i] = params[i] - lr * m[i] / np.sqrt(v[i] + epsilon)
            else:
                m_hat = m[i] / (1 - beta_1**t)
                v_hat = v[i] / (1 - beta_2**t)
                params[i] = params[i] - lr * m_hat / (np.sqrt(v_hat) + epsilon)
        history.append(([p.copy() for p in params], [a.copy() for a in m], [b.copy() for b in v]))
    return history


def run_optimizer(optimizer, params, grads_seq, dtype):
    """Apply the known gradients step by step; return the variables after each step."""
    variables = [keras.Variable(p, dtype=dtype) for p in params]
    history = []
    for grads in grads_seq:
        optimizer.apply(grads, variables)
        history.append([v.numpy().copy() for v in variables])
    return variables, history


# float32: parameters are O(1), so each of the 5 assign_sub calls rounds them by at
# most half an ulp (6e-8); 5 * 6e-8 = 3e-7 < 1e-6. float64: the only gap is the
# learning rate, which Keras keeps in a float32 variable; the rates below are powers
# of two (exact in float32), so 1e-12 leaves room only for float64 rounding.
TOLERANCE = {"float32": 1e-6, "float64": 1e-12}


def assert_close(actual, expected, dtype, what):
    tol = TOLERANCE[dtype]
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol, err_msg=f"{what} (variable {i})")


# ------------------------------------------------------- step-by-step parity with the formulas


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("momentum, nesterov", SGD_CASES, ids=SGD_IDS)
def test_sgd_step_by_step_matches_numpy_formula(dtype, momentum, nesterov):
    lr = 0.0625
    params, grads_seq = initial_params(dtype), gradient_sequence(dtype)
    optimizer = SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov)
    _, history = run_optimizer(optimizer, params, grads_seq, dtype)
    expected = numpy_sgd(params, grads_seq, lr, momentum, nesterov)
    for step, (ours, (ref_params, ref_velocity)) in enumerate(zip(history, expected), start=1):
        assert_close(ours, ref_params, dtype, f"params after step {step}")
    if momentum:
        assert_close([v.numpy() for v in optimizer.velocities], ref_velocity, dtype, "velocity")
    else:
        assert optimizer.velocities == []
    assert int(optimizer.iterations.numpy()) == STEPS


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["textbook", "kingma2015"])
def test_adam_step_by_step_matches_numpy_formula(dtype, variant):
    lr, beta_1, beta_2, epsilon = 0.03125, 0.9, 0.999, 1e-7
    params, grads_seq = initial_params(dtype), gradient_sequence(dtype)
    optimizer = Adam(lr, beta_1, beta_2, epsilon, variant=variant)
    variables = [keras.Variable(p, dtype=dtype) for p in params]
    expected = numpy_adam(params, grads_seq, lr, beta_1, beta_2, epsilon, variant)
    for step, (grads, (ref_params, ref_m, ref_v)) in enumerate(zip(grads_seq, expected), start=1):
        optimizer.apply(grads, variables)
        for ours, ref, what in [
            (variables, ref_params, "params"),
            (optimizer.momentums, ref_m, "m"),
            (optimizer.velocities, ref_v, "v"),
        ]:
            assert_close([a.numpy() for a in ours], ref, dtype, f"{what} after step {step}")


def test_textbook_and_kingma2015_step_ratio_is_the_bias_correction():
    # With eps = 0 the two variants' steps differ exactly by (1 - b1^t) / sqrt(1 - b2^t),
    # the factor stated in the Adam docstring (3.16 at t=1).
    beta_1, beta_2 = 0.9, 0.999
    params = initial_params("float64")
    grads_seq = gradient_sequence("float64", min_abs=0.1)
    _, textbook = run_optimizer(Adam(0.03125, epsilon=0.0), params, grads_seq, "float64")
    _, paper = run_optimizer(
        Adam(0.03125, epsilon=0.0, variant="kingma2015"), params, grads_seq, "float64"
    )
    # m(t) and v(t) depend only on the gradients, so both runs share them and
    # each step's ratio is the bias-correction factor alone.
    previous_t, previous_p = params, params
    for t, (now_t, now_p) in enumerate(zip(textbook, paper), start=1):
        ratio = (1 - beta_1**t) / np.sqrt(1 - beta_2**t)
        step_t = now_t[0] - previous_t[0]
        step_p = now_p[0] - previous_p[0]
        np.testing.assert_allclose(step_t, ratio * step_p, rtol=1e-9)
        previous_t, previous_p = now_t, now_p
    assert abs((1 - beta_1) / np.sqrt(1 - beta_2) - 3.1623) < 1e-4


# ------------------------------------------------------- parity with keras.optimizers


@pytest.mark.parametrize("epsilon", [0.0, 1e-7])
def test_adam_kingma2015_matches_keras_adam(epsilon):
    # Two known gaps, besides float32 rounding:
    # * Keras adds epsilon to sqrt(v), not sqrt(v_hat): in the paper's form its epsilon
    #   is eps * sqrt(1 - b2^t). That moves step t by at most
    #   lr * eps * (1 / sqrt(1 - b2^t) - 1) / sqrt(v_hat), with sqrt(v_hat) >= 0.1 here
    #   because every |g| >= 0.1; summed over the 8 steps: 1.3e-6 for eps = 1e-7, 0 for 0.
    # * Keras forms 1 - b2^t in float32 (relative error 1.3e-5 at t=1), which moves each
    #   ~lr-sized step by < 1e-7.
    # So parameters must agree to 1e-6 (float32 rounding and the second gap) plus the
    # first gap's bound, computed below.
    steps, lr, beta_2, min_abs = 8, 0.01, 0.999, 0.1
    t = np.arange(1, steps + 1)
    epsilon_gap = np.sum(lr * epsilon * (1 / np.sqrt(1 - beta_2**t) - 1) / min_abs)
    params = initial_params("float32")[:2]
    grads_seq = [g[:2] for g in gradient_sequence("float32", steps=steps, min_abs=min_abs)]
    ours_opt = Adam(lr, beta_2=beta_2, epsilon=epsilon, variant="kingma2015")
    keras_opt = keras.optimizers.Adam(lr, beta_2=beta_2, epsilon=epsilon)
    _, ours = run_optimizer(ours_opt, params, grads_seq, "float32")
    _, theirs = run_optimizer(keras_opt, params, grads_seq, "float32")
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        for i, (x, y) in enumerate(zip(a, b)):
            np.testing.assert_allclose(
                x, y, rtol=0, atol=1e-6 + epsilon_gap, err_msg=f"params after step {step} ({i})"
            )
    # Moments follow the same recurrence in both (Keras writes m += (g - m)(1 - b1)).
    for ours_state, keras_state, what in [
        (ours_opt.momentums, keras_opt._momentums, "m"),
        (ours_opt.velocities, keras_opt._velocities, "v"),
    ]:
        ours_np, keras_np = [a.numpy() for a in ours_state], [b.numpy() for b in keras_state]
        assert_close(ours_np, keras_np, "float32", what)


@pytest.mark.parametrize("momentum, nesterov", SGD_CASES, ids=SGD_IDS)
def test_sgd_matches_keras_sgd(momentum, nesterov):
    # Same update written with the same ops: only float32 rounding can differ.
    steps = 8
    params = initial_params("float32")
    grads_seq = gradient_sequence("float32", steps=steps)
    ours_opt = SGD(0.05, momentum=momentum, nesterov=nesterov)
    keras_opt = keras.optimizers.SGD(0.05, momentum=momentum, nesterov=nesterov)
    _, ours = run_optimizer(ours_opt, params, grads_seq, "float32")
    _, theirs = run_optimizer(keras_opt, params, grads_seq, "float32")
    for step, (a, b) in enumerate(zip(ours, theirs), start=1):
        assert_close(a, b, "float32", f"params after step {step}")
    if momentum:
        ours_velocity = [v.numpy() for v in ours_opt.velocities]
        keras_velocity = [m.numpy() for m in keras_opt.momentums]
        assert_close(ours_velocity, keras_velocity, "float32", "velocity")


# ------------------------------------------------------- training and serialization


def regression_data():
    x = seeded_array(64, 3, seed=1)
    y = x @ np.array([[1.5], [-2.0], [0.5]], "float32") + 0.3
    return x, y


def linear_model():
    return keras.Sequential([keras.Input((3,)), Dense(1)])


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: SGD(0.05, momentum=0.9, nesterov=True),
        lambda: Adam(0.05),
        lambda: Adam(0.05, variant="kingma2015"),
    ],
    ids=["sgd-nesterov", "adam-textbook", "adam-kingma2015"],
)
def test_compile_and_fit_reduce_the_loss(make_optimizer):
    keras.utils.set_random_seed(0)
    x, y = regression_data()
    model = linear_model()
    model.compile(optimizer=make_optimizer(), loss="mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(np.tile(x, (4, 1)), np.tile(y, (4, 1)), batch_size=16, epochs=3, verbose=0)
    after = model.evaluate(x, y, verbose=0)
    assert after < 0.05 * before, (before, after)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda: Adam(0.02, beta_1=0.8, epsilon=1e-6, variant="kingma2015"),
        lambda: SGD(0.03, momentum=0.5),
    ],
    ids=["adam", "sgd-momentum"],
)
def test_saved_keras_model_restores_optimizer_config_and_state(make_optimizer, tmp_path):
    keras.utils.set_random_seed(0)
    x, y = regression_data()
    model = linear_model()
    model.compile(optimizer=make_optimizer(), loss="mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path)

    assert type(reloaded.optimizer) is type(model.optimizer)
    assert reloaded.optimizer.get_config() == model.optimizer.get_config()
    for a, b in zip(reloaded.optimizer.variables, model.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert int(reloaded.optimizer.iterations.numpy()) == 4

    # Same state, same next steps.
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    reloaded.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(reloaded.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "optimizer",
    [
        Adam(0.005, beta_1=0.85, beta_2=0.99, epsilon=1e-8, variant="kingma2015", clipnorm=1.0),
        Adam(),
        SGD(0.2, momentum=0.7, nesterov=True, weight_decay=0.01),
    ],
    ids=["adam-kingma2015", "adam-default", "sgd"],
)
def test_get_config_round_trips_through_keras_serialization(optimizer):
    config = optimizer.get_config()
    assert type(optimizer).from_config(dict(config)).get_config() == config
    serialized = keras.optimizers.serialize(optimizer)
    assert serialized["registered_name"] == f"tfsuite>{type(optimizer).__name__}"
    restored = keras.optimizers.deserialize(serialized)
    assert type(restored) is type(optimizer) and restored.get_config() == config


def test_textbook_is_the_default_variant():
    assert Adam().variant == "textbook"
    assert Adam().get_config()["variant"] == "textbook"


def test_learning_rate_schedule_is_accepted_and_serialized():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=1, decay_rate=0.5)
    optimizer = SGD(schedule)
    variable = keras.Variable(np.ones(2, "float32"))
    optimizer.apply([np.ones(2, "float32")], [variable])
    optimizer.apply([np.ones(2, "float32")], [variable])
    np.testing.assert_allclose(variable.numpy(), 1.0 - 0.1 - 0.05, rtol=1e-6)
    restored = SGD.from_config(optimizer.get_config())
    assert isinstance(restored.get_config()["learning_rate"], dict)


def test_invalid_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"variant must be one of \['kingma2015', 'textbook'\]"):
        Adam(variant="amsgrad")
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        Adam(learning_rate=-0.001)
    with pytest.raises(ValueError, match="learning_rate must be >= 0"):
        SGD(learning_rate=-1)
    with pytest.raises(ValueError, match=r"beta_1 must be in \[0, 1\)"):
        Adam(beta_1=1.0)
    with pytest.raises(ValueError, match=r"beta_2 must be in \[0, 1\)"):
        Adam(beta_2=-0.1)
    with pytest.raises(ValueError, match="epsilon must be >= 0"):
        Adam(epsilon=-1e-7)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\]"):
        SGD(momentum=1.5)


def test_integer_learning_rate_is_accepted_as_float():
    assert SGD(learning_rate=1).get_config()["learning_rate"] == 1.0


def test_warmup_linear_decay_rises_then_falls_to_zero_and_round_trips():
    from layers.optimizers import WarmupLinearDecay

    schedule = WarmupLinearDecay(1e-3, warmup=10, total=110)
    values = [float(schedule(t)) for t in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 5e-4, 1e-3, 5e-4, 0.0, 0.0], atol=1e-9)
    again = WarmupLinearDecay.from_config(schedule.get_config())
    assert float(again(35)) == float(schedule(35))
    for warmup, total in ((10, 10), (-1, 5)):
        with pytest.raises(ValueError, match="warmup < total"):
            WarmupLinearDecay(1e-3, warmup=warmup, total=total)

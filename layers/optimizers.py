"""Optimization algorithms of textbook section 1.4 as ``keras.optimizers.Optimizer`` subclasses.

Both follow the structure of ``keras/src/optimizers/sgd.py`` and ``adam.py``:
``build`` creates the per-variable state with ``add_optimizer_variables``,
``update_step`` updates one variable with ``keras.ops`` through
``self.assign*`` (so they run eagerly, under ``tf.function`` and in
``model.fit``), and ``get_config`` returns every constructor argument. The
base class still handles ``weight_decay``, clipping, EMA, loss scaling and
gradient accumulation passed through ``**kwargs``.
"""

import keras
from keras import ops

from layers.validation import check_choice

__all__ = ["SGD", "Adam", "ADAM_VARIANTS", "WarmupLinearDecay", "bert_adamw"]

ADAM_VARIANTS = ("textbook", "kingma2015")


def _check_learning_rate(owner, learning_rate):
    """Reject negative constant rates (which would ascend); allow schedules and callables."""
    if isinstance(learning_rate, bool):
        raise ValueError(f"{owner} learning_rate must be a float >= 0, got {learning_rate!r}")
    if isinstance(learning_rate, (int, float)):
        if learning_rate < 0:
            raise ValueError(
                f"{owner} learning_rate must be >= 0 (a negative rate climbs the loss), "
                f"got {learning_rate}"
            )
        # The Keras base class only accepts a Python float for a constant rate.
        return float(learning_rate)
    return learning_rate


def _scalar(value, dtype):
    """A Python hyperparameter as a tensor of ``dtype``.

    ``ops.cast(0.9, "float64")`` would pass through a float32 tensor (0.89999998),
    so hyperparameters are converted straight to the variable's dtype.
    """
    return ops.convert_to_tensor(value, dtype=dtype)


def _check_unit_interval(owner, name, value, include_one=False):
    value = float(value)
    upper_ok = value <= 1.0 if include_one else value < 1.0
    if not (value >= 0.0 and upper_ok):
        interval = "[0, 1]" if include_one else "[0, 1)"
        raise ValueError(f"{owner} {name} must be in {interval}, got {value}")
    return value


@keras.saving.register_keras_serializable(package="tfsuite")
class SGD(keras.optimizers.Optimizer):
    """Section 1.4, stochastic gradient descent: ``theta(t+1) = theta(t) - eta * grad L(theta(t))``.

    With ``momentum = mu > 0`` (classical momentum, as in Keras):
    ``v = mu * v - eta * g`` then ``theta = theta + v``; with ``nesterov=True``
    the step looks ahead along the new velocity:
    ``theta = theta + mu * v - eta * g``.

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` or a callable;
            ``eta``. Default 0.01.
        momentum: float in ``[0, 1]``, ``mu``; 0 is plain SGD. Default 0.0.
        nesterov: bool, Nesterov momentum. Default False.
        **kwargs: base optimizer arguments (``name``, ``weight_decay``,
            ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``use_ema``, ...).

    Example:
    >>> model.compile(optimizer=SGD(learning_rate=0.1, momentum=0.9), loss="mse")
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate=_check_learning_rate("SGD", learning_rate), **kwargs)
        self.momentum = _check_unit_interval("SGD", "momentum", momentum, include_one=True)
        self.nesterov = bool(nesterov)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # Plain SGD keeps no state; the velocity exists only with momentum.
        self.velocities = []
        if self.momentum != 0:
            self.velocities = self.add_optimizer_variables(variables, "velocity")

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        if self.momentum == 0:
            self.assign_sub(variable, ops.multiply(lr, gradient))
            return
        mu = _scalar(self.momentum, variable.dtype)
        velocity = self.velocities[self._get_variable_index(variable)]
        self.assign(velocity, ops.subtract(ops.multiply(mu, velocity), ops.multiply(lr, gradient)))
        if self.nesterov:
            self.assign_add(
                variable, ops.subtract(ops.multiply(mu, velocity), ops.multiply(lr, gradient))
            )
        else:
            self.assign_add(variable, velocity)

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


@keras.saving.register_keras_serializable(package="tfsuite")
class Adam(keras.optimizers.Optimizer):
    """Section 1.4, Adam, textbook form by default:

    ``m(t) = beta1 * m(t-1) + (1 - beta1) * g(t)``,
    ``v(t) = beta2 * v(t-1) + (1 - beta2) * g(t)^2``,
    ``theta(t+1) = theta(t) - eta * m(t) / sqrt(v(t) + eps)``.

    ``variant="textbook"`` (default) is exactly the formula above. It differs
    from the published algorithm (Kingma & Ba, "Adam", ICLR 2015, Algorithm 1)
    in two ways: (1) no bias correction, so with ``m(0) = v(0) = 0`` the step
    is ``(1 - beta1^t) / (1 - beta2^t)^0.5`` times the paper's step (for the
    default betas: 3.2x at t=1, at most 6.6x at t=12, still 3.2x at t=100 and
    1.26x at t=1000, tending to 1); (2) ``eps`` sits inside the square root, so
    it floors the denominator at ``sqrt(eps)`` (3.2e-4 for 1e-7) instead of
    ``eps``.

    ``variant="kingma2015"`` is the published algorithm:
    ``m_hat = m(t) / (1 - beta1^t)``, ``v_hat = v(t) / (1 - beta2^t)``,
    ``theta(t+1) = theta(t) - eta * m_hat / (sqrt(v_hat) + eps)``.
    (``keras.optimizers.Adam`` folds the corrections into the step size and
    adds its ``epsilon`` to ``sqrt(v)`` rather than ``sqrt(v_hat)``; the two
    agree up to an ``eps``-sized term.)

    Args:
        learning_rate: float >= 0, a ``LearningRateSchedule`` or a callable;
            ``eta``. Default 0.001.
        beta_1: float in ``[0, 1)``, decay of the first moment. Default 0.9.
        beta_2: float in ``[0, 1)``, decay of the second moment. Default 0.999.
        epsilon: float >= 0, ``eps``. Default 1e-7.
        variant: ``"textbook"`` or ``"kingma2015"``. Default ``"textbook"``.
        **kwargs: base optimizer arguments (``name``, ``weight_decay``,
            ``clipnorm``, ``clipvalue``, ``global_clipnorm``, ``use_ema``, ...).

    Example:
    >>> model.compile(optimizer=Adam(learning_rate=1e-3, variant="kingma2015"), loss="mse")
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        variant="textbook",
        **kwargs,
    ):
        super().__init__(learning_rate=_check_learning_rate("Adam", learning_rate), **kwargs)
        self.beta_1 = _check_unit_interval("Adam", "beta_1", beta_1)
        self.beta_2 = _check_unit_interval("Adam", "beta_2", beta_2)
        self.epsilon = float(epsilon)
        if self.epsilon < 0:
            raise ValueError(f"Adam epsilon must be >= 0, got {epsilon}")
        self.variant = check_choice("Adam variant", variant, ADAM_VARIANTS)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.momentums, self.velocities = self.add_optimizer_variables(
            variables, ["momentum", "velocity"]
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        dtype = variable.dtype
        index = self._get_variable_index(variable)
        m, v = self.momentums[index], self.velocities[index]

        # 1 - beta is formed in float64 before the cast: in float32, 1 - 0.999 keeps
        # only 4 significant digits (9.9998713e-4).
        self.assign(
            m,
            ops.add(
                ops.multiply(_scalar(self.beta_1, dtype), m),
                ops.multiply(_scalar(1.0 - self.beta_1, dtype), gradient),
            ),
        )
        self.assign(
            v,
            ops.add(
                ops.multiply(_scalar(self.beta_2, dtype), v),
                ops.multiply(_scalar(1.0 - self.beta_2, dtype), ops.square(gradient)),
            ),
        )
        epsilon = _scalar(self.epsilon, dtype)
        if self.variant == "textbook":
            step = ops.divide(m, ops.sqrt(ops.add(v, epsilon)))
        else:
            # iterations counts completed steps, so this update is step t = iterations + 1;
            # the bias corrections 1 - beta^t are likewise computed in float64.
            t = ops.cast(self.iterations + 1, "float64")
            bias_1 = ops.cast(1.0 - ops.power(_scalar(self.beta_1, "float64"), t), dtype)
            bias_2 = ops.cast(1.0 - ops.power(_scalar(self.beta_2, "float64"), t), dtype)
            m_hat = ops.divide(m, bias_1)
            v_hat = ops.divide(v, bias_2)
            step = ops.divide(m_hat, ops.add(ops.sqrt(v_hat), epsilon))
        self.assign_sub(variable, ops.multiply(lr, step))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "variant": self.variant,
        }


@keras.saving.register_keras_serializable(package="tfsuite")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """BERT's fine-tuning schedule: ``lr(t) = peak * min(t / warmup, (total - t) / (total - warmup))``, at least 0.

    Linear warmup from 0 to ``peak`` over ``warmup`` steps, then linear decay to 0 at step ``total``.

    Example:
    >>> schedule = WarmupLinearDecay(1e-4, warmup=10, total=110)
    >>> [round(float(schedule(t)), 6) for t in (0, 5, 10, 60, 110)]
    [0.0, 5e-05, 0.0001, 5e-05, 0.0]
    """

    def __init__(self, peak, warmup, total):
        self.peak = _check_learning_rate("WarmupLinearDecay", peak)
        self.warmup, self.total = int(warmup), int(total)
        if self.warmup < 0 or self.total <= self.warmup:
            raise ValueError(f"WarmupLinearDecay needs 0 <= warmup < total, got warmup={warmup}, total={total}")

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = step / max(self.warmup, 1)
        down = (self.total - step) / (self.total - self.warmup)
        return self.peak * keras.ops.clip(keras.ops.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "warmup": self.warmup, "total": self.total}


def bert_adamw(peak, warmup, total, weight_decay=0.01, clipnorm=1.0):
    """BERT's fine-tuning optimizer (Devlin et al. 2019): AdamW on :class:`WarmupLinearDecay`, no weight decay
    on biases and LayerNorm scales/offsets, gradients clipped to ``clipnorm``.

    Example:
    >>> optimizer = bert_adamw(1e-4, warmup=10, total=100)
    >>> round(float(optimizer.learning_rate), 6)  # step 0 of the warmup
    0.0
    """
    optimizer = keras.optimizers.AdamW(
        WarmupLinearDecay(peak, warmup, max(int(total), int(warmup) + 1)), weight_decay=weight_decay, clipnorm=clipnorm)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer

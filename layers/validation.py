"""Argument and input checks raised at the public boundary of tfsuite layers.

Errors say what was wrong and what to do (STYLE.md convention 10), so a user
never has to read a TensorFlow stack trace to find a wrong shape or option.
"""

import numbers

__all__ = [
    "check_rank",
    "check_min_rank",
    "check_choice",
    "check_positive_int",
    "check_positive_float",
    "check_int_tuple",
]


def check_rank(layer_name, input_shape, expected_rank, layout):
    """Raise ``ValueError`` unless ``input_shape`` has ``expected_rank`` dims.

    Args:
        layer_name: name used in the message.
        input_shape: shape tuple (``None`` allowed for unknown dims).
        expected_rank: int or tuple of accepted ranks.
        layout: human description of the axes, e.g. ``"(batch, time, features)"``.
    """
    ranks = (expected_rank,) if isinstance(expected_rank, int) else tuple(expected_rank)
    shape = tuple(input_shape)
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(
            f"{layer_name} expected inputs of rank {want} {layout}, got shape {shape}"
        )


def check_min_rank(layer_name, input_shape, min_rank, layout):
    """Raise ``ValueError`` unless ``input_shape`` has at least ``min_rank`` dims.

    For layers that act on the last axis and accept any leading axes (e.g.
    ``Dense`` on ``(batch, ..., features)``).
    """
    shape = tuple(input_shape)
    if len(shape) < min_rank:
        raise ValueError(
            f"{layer_name} expected inputs of rank >= {min_rank} {layout}, got shape {shape}"
        )


def check_choice(name, value, choices):
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value


def check_positive_int(name, value):
    """Return ``int(value)``; raise ``ValueError`` if it is not a positive integer."""
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_positive_float(name, value, allow_zero=False):
    """Return ``float(value)``; raise ``ValueError`` if it is negative (or zero)."""
    value = float(value)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_int_tuple(name, value, length):
    """Return ``value`` as a tuple of ``length`` positive ints.

    An int is repeated (``3`` -> ``(3, 3)`` for ``length=2``), as Keras does for
    ``kernel_size``, ``strides`` and ``pool_size``; a list or tuple must have
    exactly ``length`` entries.
    """
    single = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    items = (value,) * length if single else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or len(items) != length:
        raise ValueError(f"{name} must be an int or a tuple of {length} ints, got {value!r}")
    return tuple(check_positive_int(name, v) for v in items)

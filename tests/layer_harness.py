"""The layer contract every tfsuite layer test runs.

In the spirit of ``keras.src.testing.TestCase.run_layer_test``: one call checks
output shape and dtype, ``get_config``/``from_config``, a ``.keras`` round-trip,
a SavedModel round-trip (``model.export`` + ``tf.saved_model.load``) and that
gradients reach every trainable weight. The numerical check against a reference
(a Keras built-in with copied weights, scipy, or NumPy of the textbook formula)
is passed in as ``reference`` so that each test states its own ground truth.

Example::

    from tests.layer_harness import run_layer_contract

    def test_swish():
        run_layer_contract(
            lambda: Swish(beta=1.5),
            inputs=np.random.randn(4, 8).astype("float32"),
            expected_output_shape=(4, 8),
            reference=lambda x: x / (1 + np.exp(-1.5 * x)),
        )
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import keras
import numpy as np
import tensorflow as tf


@dataclass
class ContractReport:
    """What the contract observed, for tests that want to assert more."""

    outputs: Any
    layer: keras.layers.Layer


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, dict):  # a model's named outputs (keras-hub backbones), in key order
        return [x[key] for key in sorted(x)]
    return [x]


def _to_numpy(x):
    if isinstance(x, (list, tuple)):
        return [_to_numpy(v) for v in x]
    if isinstance(x, dict):
        return {k: _to_numpy(v) for k, v in x.items()}
    return keras.ops.convert_to_numpy(x)


def _assert_all_close(actual, expected, atol, rtol, what):
    actual, expected = _as_list(actual), _as_list(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs vs {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(e), atol=atol, rtol=rtol, err_msg=f"{what} (output {i})"
        )


def _functional_model(layer, inputs, call_kwargs):
    """Wrap ``layer`` in a functional model whose inputs mirror ``inputs``."""
    arrays = _as_list(inputs)
    symbolic = [
        keras.Input(shape=np.shape(a)[1:], batch_size=None, dtype=str(np.asarray(a).dtype))
        for a in arrays
    ]
    call_in = symbolic if isinstance(inputs, (list, tuple)) else symbolic[0]
    outputs = layer(call_in, **call_kwargs)
    return keras.Model(call_in, outputs)


def run_layer_contract(
    make_layer: Callable[[], keras.layers.Layer],
    inputs,
    *,
    expected_output_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    expected_output_dtype: str = "float32",
    reference: Callable[..., Any] | None = None,
    reference_uses_layer: bool = False,
    call_kwargs: dict | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    check_gradients: bool = True,
    check_saved_model: bool = True,
    check_keras_file: bool = True,
) -> ContractReport:
    """Run the full tfsuite layer contract.

    Args:
        make_layer: zero-argument factory returning a fresh, unbuilt layer.
        inputs: a NumPy array, or a list of arrays for multi-input layers.
        expected_output_shape: shape (or list of shapes) of the output.
        expected_output_dtype: dtype of every output.
        reference: ground truth. Called as ``reference(*inputs)``, or as
            ``reference(layer, *inputs)`` when ``reference_uses_layer`` (for
            references that need the layer's weights, e.g. a Keras built-in
            with copied weights). Its result is compared to the layer output.
        call_kwargs: extra keyword arguments for the call (inference mode).
        atol, rtol: tolerances for every comparison.
        check_gradients: assert every trainable weight receives a finite,
            non-zero gradient (False for layers without weights is implied).
        check_saved_model: export with ``model.export`` and reload.
        check_keras_file: save and reload a ``.keras`` archive.
    """
    call_kwargs = dict(call_kwargs or {})
    layer = make_layer()
    args = _as_list(inputs)
    call_in = inputs
    outputs = layer(call_in, **call_kwargs)
    outputs_np = _to_numpy(outputs)

    # 1. Shape and dtype.
    out_list = _as_list(outputs)
    if expected_output_shape is not None:
        shapes = (
            list(expected_output_shape)
            if expected_output_shape and isinstance(expected_output_shape[0], (list, tuple))
            else [expected_output_shape]
        )
        assert len(shapes) == len(out_list), f"expected {len(shapes)} outputs, got {len(out_list)}"
        for out, shape in zip(out_list, shapes):
            assert tuple(out.shape) == tuple(shape), f"output shape {tuple(out.shape)} != {tuple(shape)}"
    for out in out_list:
        assert keras.backend.standardize_dtype(out.dtype) == expected_output_dtype, (
            f"output dtype {out.dtype} != {expected_output_dtype}"
        )
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(out))), "non-finite output"

    # 2. Numerical reference.
    if reference is not None:
        expected = reference(layer, *args) if reference_uses_layer else reference(*args)
        _assert_all_close(outputs_np, expected, atol, rtol, "reference")

    # 3. get_config / from_config round-trip, weights copied.
    config = layer.get_config()
    # A copy: some from_config (e.g. keras.layers.RNN's) pop keys from the dict they get.
    clone = layer.__class__.from_config(copy.deepcopy(config))
    clone(call_in, **call_kwargs)
    assert clone.get_config() == config, "get_config() does not round-trip"
    clone.set_weights(layer.get_weights())
    _assert_all_close(_to_numpy(clone(call_in, **call_kwargs)), outputs_np, atol, rtol, "from_config")

    # 4. .keras round-trip through a functional model.
    model = None
    if check_keras_file or check_saved_model:
        model = _functional_model(layer, inputs, call_kwargs)
        model_out = _to_numpy(model(call_in))
        _assert_all_close(model_out, outputs_np, atol, rtol, "functional model")
    with tempfile.TemporaryDirectory() as tmp:
        if check_keras_file:
            path = os.path.join(tmp, "layer.keras")
            model.save(path)
            reloaded = keras.models.load_model(path)
            _assert_all_close(
                _to_numpy(reloaded(call_in)), outputs_np, atol, rtol, ".keras round-trip"
            )
        # 5. SavedModel round-trip.
        if check_saved_model:
            path = os.path.join(tmp, "saved_model")
            model.export(path, format="tf_saved_model", verbose=False)
            restored = tf.saved_model.load(path)
            tensors = [tf.constant(a) for a in args]
            try:
                served = restored.serve(*tensors)
            except TypeError:
                # A functional model over a list of inputs exports one list argument.
                served = restored.serve(tensors)
            _assert_all_close(_to_numpy(served), outputs_np, atol, rtol, "SavedModel round-trip")

    # 6. Gradients reach every trainable weight.
    if check_gradients and layer.trainable_weights:
        assert_gradients_reach_weights(layer, call_in, call_kwargs)

    return ContractReport(outputs=outputs_np, layer=layer)


def assert_gradients_reach_weights(layer, inputs, call_kwargs=None):
    """Every trainable weight of ``layer`` gets a finite, non-zero gradient."""
    call_kwargs = dict(call_kwargs or {})
    if _accepts_training(layer):
        call_kwargs.setdefault("training", True)
    tensors = (
        [tf.constant(a) for a in inputs] if isinstance(inputs, (list, tuple)) else tf.constant(inputs)
    )
    with tf.GradientTape() as tape:
        out = layer(tensors, **call_kwargs)
        # A random projection, so symmetric outputs (e.g. normalized) still get gradients.
        loss = 0.0
        for i, o in enumerate(_as_list(out)):
            if not o.dtype.is_floating:
                continue
            proj = tf.random.stateless_normal(tf.shape(o), seed=[7, i], dtype=o.dtype)
            loss += tf.reduce_sum(o * proj)
    grads = tape.gradient(loss, layer.trainable_weights)
    for w, g in zip(layer.trainable_weights, grads):
        assert g is not None, f"no gradient reaches weight {w.path}"
        g = tf.convert_to_tensor(g)
        assert np.all(np.isfinite(g.numpy())), f"non-finite gradient for {w.path}"
        assert np.any(g.numpy() != 0), f"zero gradient for {w.path}"


def _accepts_training(layer):
    import inspect

    try:
        return "training" in inspect.signature(layer.call).parameters
    except (TypeError, ValueError):
        return False


def copy_weights(source: keras.layers.Layer, target: keras.layers.Layer, order=None):
    """Copy ``source``'s weights into ``target`` (optionally reordered by index list)."""
    weights = source.get_weights()
    if order is not None:
        weights = [weights[i] for i in order]
    target.set_weights(weights)


def seeded_array(*shape, seed=0, dtype="float32", scale=1.0):
    """Deterministic standard-normal test data."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)

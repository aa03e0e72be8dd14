"""A released app model as a Keras network again: the "original" every compression is measured against.

Section 11.1 compresses a trained model; ours are the releases under
``saved_models/``. A release is a SavedModel (what TF Serving serves), and a
release's Keras checkpoint may be gone (``saved_models/fashion_mnist/1``'s
``runs/fashion_mnist/lenet5/model.keras`` is). Its ``MANIFEST.json`` entry
still records the training config, so the network can be rebuilt exactly as
the app builds it (``app.build_model(config)``) and given the SavedModel's
variables, matched by name and shape:

* :func:`copy_release_weights` assigns a Keras model the variables of a
  loaded SavedModel (:func:`saved_variables`: ``tf.saved_model.load(...).variables``
  and those its signatures capture), one for one, and fails with the names
  that did not match (releases exported with float16 or int8 stored weights
  go through ``apps.export.load_stored_weights`` instead);
* :func:`load_release_network` does the whole step for a version folder and
  returns ``(network, config, app)``;
* :func:`release_max_abs_diff` checks the rebuilt network against the
  release's own ``serving_default`` on a batch (``apps.export.check_export``).

Example::

    from compression.release import load_release_network, release_max_abs_diff

    teacher, config, app = load_release_network("saved_models/fashion_mnist/1")
    release_max_abs_diff(teacher, "saved_models/fashion_mnist/1", images)  # 0.0
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from apps.config import config_from_dict
from apps.export import STORED_PREFIX, check_export, load_stored_weights
from apps.registry import get_app
from apps.releases import recorded_manifest

__all__ = ["copy_release_weights", "load_release_network", "release_max_abs_diff", "saved_variables"]


def _is_weight(variable):
    # Seed-generator states (dropout) are integer variables, not weights, and are not exported.
    return tf.as_dtype(variable.dtype).is_floating


def saved_variables(loaded):
    """Every variable of a loaded SavedModel: the object's own (exports that track the model) and those its
    signatures capture (``keras.export.ExportArchive`` endpoints without a tracked model, ``apps.export``)."""
    found = {}
    for variable in [*loaded.variables, *(v for f in loaded.signatures.values() for v in f.variables)]:
        found.setdefault(variable.name, variable)
    return list(found.values())


def copy_release_weights(model, variables, source="the SavedModel"):
    """Assign each float weight of ``model`` the SavedModel variable of the same name and shape.

    Keras names a weight by its path (``c1/kernel``); the SavedModel keeps it
    as the ``tf.Variable`` name (``c1/kernel:0``). Every weight of ``model``
    must find exactly one variable and every exported variable must be used:
    anything else means the network is not the one that was exported.

    Args:
        model: a built ``keras.Model``, the network the release was exported from.
        variables: the SavedModel's variables (:func:`saved_variables` of ``tf.saved_model.load(path)``).
        source: str, named in the error message.

    Returns:
        ``model``, its weights assigned.

    Raises:
        ValueError: a weight without a variable of its name, a shape that
            differs, or exported variables the model has no weight for.
    """
    found = {}
    for variable in variables:
        if _is_weight(variable):
            found.setdefault(variable.name.split(":")[0], variable)
    weights = [w for w in model.weights if _is_weight(w)]
    missing = [w.path for w in weights if w.path not in found]
    wrong = [
        f"{w.path}: model {tuple(w.shape)} vs stored {tuple(found[w.path].shape)}"
        for w in weights
        if w.path in found and tuple(found[w.path].shape) != tuple(w.shape)
    ]
    unused = sorted(set(found) - {w.path for w in weights})
    if missing or wrong or unused:
        raise ValueError(
            f"{source} does not hold this network's weights: "
            f"missing {missing or 'none'}; shape mismatches {wrong or 'none'}; "
            f"stored but not in the model {unused or 'none'}. Rebuild the model with the config the "
            "release was trained with (its MANIFEST.json entry)."
        )
    for weight in weights:
        weight.assign(tf.cast(found[weight.path], weight.dtype))
    return model


def load_release_network(version_dir, app=None):
    """Rebuild a released version's Keras network from its MANIFEST config and SavedModel variables.

    Args:
        version_dir: ``saved_models/<app>/<version>``; ``MANIFEST.json`` beside it.
        app: an ``apps.app.App``; default the app named like the release folder.

    Returns:
        ``(network, config, app)``: the network as ``app.build_model(config)``
        builds it, with the release's weights.

    Raises:
        FileNotFoundError: no SavedModel, or no MANIFEST entry for the version.
        ValueError: the SavedModel's variables do not fit the rebuilt network.
    """
    version_dir = Path(version_dir)
    if not (version_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"{version_dir} holds no saved_model.pb: pass a release folder such as "
                                "saved_models/fashion_mnist/1")
    _, manifest = recorded_manifest(version_dir)
    app = app or get_app(version_dir.parent.name)
    config = config_from_dict(app.Config, manifest["versions"][version_dir.name]["config"])
    network = app.build_model(config)
    variables = saved_variables(tf.saved_model.load(str(version_dir)))
    if any(v.name.startswith(STORED_PREFIX) for v in variables):
        load_stored_weights(network, version_dir)  # exported with float16 or int8 stored weights
    else:
        copy_release_weights(network, variables, source=str(version_dir))
    return network, config, app


def release_max_abs_diff(network, version_dir, inputs, app=None, config=None):
    """Largest difference between the release's ``serving_default`` and ``app.serving_outputs(network)``.

    Args:
        network: the rebuilt Keras network (:func:`load_release_network`).
        version_dir: the release folder.
        inputs: a batch for the first serving input (an array), or ``{input name: array}``.
        app, config: default, read again from the release.
    """
    if app is None or config is None:
        _, manifest = recorded_manifest(Path(version_dir))
        app = app or get_app(Path(version_dir).parent.name)
        config = config or config_from_dict(app.Config, manifest["versions"][Path(version_dir).name]["config"])
    if not isinstance(inputs, dict):
        inputs = {next(iter(app.serving_signature(config))): inputs}
    return check_export(app, network, config, version_dir, inputs)

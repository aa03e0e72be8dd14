"""Releases: versions under ``saved_models/<release>/<version>/``, their MANIFEST, serving, and loading one.

No gradio here: ``tfsuite export``, ``tfsuite evaluate`` and ``tfsuite
serve`` use this module, the demo (``apps/ui.py``) uses it too, never the
other way round.

- :func:`latest_version_dir`, :func:`next_version`: the TF Serving layout.
- :func:`write_manifest`, :func:`release_entry`: ``MANIFEST.json``, what was
  released, from which run, how it scored and with which commands.
- :func:`serving_commands`: the ``tensorflow_model_server`` and docker lines.
- :class:`ReleasedModel`: a release's SavedModel signatures called with NumPy
  arrays (the demo and ``tfsuite evaluate`` call what TF Serving serves).

Example::

    from apps.releases import ReleasedModel, latest_version_dir

    model = ReleasedModel(latest_version_dir("saved_models", "translation_en_de"))
    model({"sentences": np.array([b"Open the file."])})["translations"]
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from apps.config import config_to_dict

__all__ = [
    "DEFAULT_MODELS_DIR",
    "GenerationReleases",
    "ReleasedModel",
    "latest_version_dir",
    "next_version",
    "record_release_evaluation",
    "recorded_manifest",
    "release_entry",
    "release_note",
    "serving_commands",
    "write_manifest",
]


DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "saved_models"  # the releases in git


def _command_line():
    from apps.trainer import command_line

    return command_line()


def latest_version_dir(models_dir, app_name):
    """``<models_dir>/<app_name>/<largest numeric version>/``, or a clear error if none."""
    app_dir = Path(models_dir) / app_name
    versions = sorted(int(p.name) for p in app_dir.glob("*") if p.is_dir() and p.name.isdigit())
    if not versions:
        raise FileNotFoundError(
            f"no released model under {app_dir}/; train and export one: "
            f"`tfsuite train {app_name}` then "
            f"`tfsuite export {app_name} --checkpoint runs/{app_name}/<run>/model.keras`"
        )
    return app_dir / str(versions[-1])


def next_version(app_dir):
    """One more than the largest numeric version folder under ``app_dir`` (1 if none)."""
    app_dir = Path(app_dir)
    versions = [int(p.name) for p in app_dir.iterdir() if p.is_dir() and p.name.isdigit()] if app_dir.is_dir() else []
    return max(versions, default=0) + 1


def write_manifest(app_dir, version, entry):
    """Add or replace ``version`` in ``<app_dir>/MANIFEST.json`` (what was released, how, how good)."""
    manifest_path = Path(app_dir) / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {"versions": {}}
    manifest["versions"][str(version)] = entry
    manifest["latest"] = max(int(v) for v in manifest["versions"])
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest_path


def recorded_manifest(version_dir):
    """``(MANIFEST.json path, manifest)`` of a released version; FileNotFoundError when it has no entry."""
    version_dir = Path(version_dir)
    manifest_path = version_dir.parent / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8")) if manifest_path.is_file() else {}
    if version_dir.name not in manifest.get("versions", {}):
        raise FileNotFoundError(
            f"{manifest_path} has no entry for version {version_dir.name}: export it with `tfsuite export`"
        )
    return manifest_path, manifest


def record_release_evaluation(version_dir, evaluation, check):
    """Write a released version's own test figures: MANIFEST entry ``release_evaluation`` + ``checks/<version>.json``.

    Args:
        version_dir: the ``<release>/<version>/`` SavedModel folder that was evaluated.
        evaluation: dict, the evaluation record (metrics of model and baseline, signatures, examples).
        check: dict, ``split``, ``metrics``, the inputs (``sources``, or ``inputs``: ``{serving input: [...]}``),
            ``references``, ``outputs`` of a fixed test slice.

    Returns:
        The two paths written.

    Raises:
        FileNotFoundError: the version has no MANIFEST entry (nothing is written);
        :func:`recorded_manifest` raises it before an evaluation starts.
    """
    version_dir = Path(version_dir)
    app_dir, version = version_dir.parent, version_dir.name
    manifest_path, manifest = recorded_manifest(version_dir)
    check_path = app_dir / "checks" / f"{version}.json"
    check_path.parent.mkdir(exist_ok=True)
    check_path.write_text(json.dumps(check, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    entry = manifest["versions"][version]
    entry["release_evaluation"] = {**evaluation, "check_slice": {"file": str(check_path.relative_to(app_dir)),
                                                                  "split": check["split"], "metrics": check["metrics"]},
                                   "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [manifest_path, check_path]


def serving_commands(app_name, app_dir, port=8501):
    """The TF Serving commands (binary and docker) that serve ``app_dir``'s versions."""
    base = Path(app_dir).resolve()
    return {
        "tensorflow_model_server": (
            f"tensorflow_model_server --rest_api_port={port} --model_name={app_name} --model_base_path={base}"
        ),
        "docker": (
            f"docker run --rm -p {port}:8501 "
            f"--mount type=bind,source={base},target=/models/{app_name} "
            f"-e MODEL_NAME={app_name} -t tensorflow/serving"
        ),
        "rest_url": f"http://localhost:{port}/v1/models/{app_name}:predict",
    }


def recorded_figures(release, prefix="", models_dir=None):
    """One line of the figures starting with ``prefix`` that the latest version of ``release`` recorded
    (``tfsuite evaluate --record``), with when; or ``"nothing"``."""
    path = Path(models_dir or DEFAULT_MODELS_DIR) / release / "MANIFEST.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        evaluation = manifest["versions"][str(manifest["latest"])]["release_evaluation"]
    except (OSError, ValueError, KeyError):
        return "nothing"
    figures = "  ".join(f"{k} {v:.4f}" for k, v in evaluation["metrics"].items() if k.startswith(prefix))
    return f"{figures or 'nothing'} (version {manifest['latest']}, {evaluation.get('finished', 'undated')})"


def release_entry(app, config, checkpoint, directory, max_abs_diff, command=None):
    """The MANIFEST.json entry of one exported version."""
    run_record_path = Path(checkpoint).parent / "metrics.json"
    run_record = json.loads(run_record_path.read_text()) if run_record_path.is_file() else {}
    # Apps with generation metrics write evaluation.json beside the checkpoint
    # (scores, metric signatures, data version, decoding settings, examples).
    evaluation_path = Path(checkpoint).parent / "evaluation.json"
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else None
    entry = {
        "path": directory.name,  # relative to MANIFEST.json, so the release can move
        "checkpoint": str(checkpoint),
        "config": config_to_dict(config),
        "test_metrics": run_record.get("metrics", {}),
        "train_seconds": run_record.get("train_seconds"),
        "train_command": run_record.get("command"),
        "export_command": command or _command_line(),
        "signature": {
            "name": "serving_default",
            "inputs": {
                name: {"dtype": spec.dtype.name, "shape": list(spec.shape)}
                for name, spec in app.serving_signature(config).items()
            },
        },
        "max_abs_diff_vs_keras": max_abs_diff,
        "exported": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if evaluation is not None:
        entry["evaluation"] = evaluation
    init_from = getattr(config, "init_from", "")
    pretrain_record = Path(init_from).parent / "metrics.json" if init_from else None
    if pretrain_record is not None and pretrain_record.is_file():  # fine-tuned: the run it started from, too
        pretrain = json.loads(pretrain_record.read_text())
        entry.update(pretrain_command=pretrain.get("command"), pretrain_seconds=pretrain.get("train_seconds"),
                     pretrain_metrics=pretrain.get("metrics", {}))
    return entry


def release_note(version_dir):
    """One line about the released version, from its MANIFEST.json entry when there is one."""
    note = f"Model: `{version_dir.parent.name}/{version_dir.name}`"
    manifest = version_dir.parent / "MANIFEST.json"
    if manifest.is_file():
        entry = json.loads(manifest.read_text()).get("versions", {}).get(version_dir.name, {})
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in entry.get("test_metrics", {}).items() if "loss" not in k)
        model = entry.get("config", {}).get("model")
        note += f" ({model}; {metrics})" if model and metrics else ""
    return note + "."



class ReleasedModel:
    """A SavedModel's signatures, called with NumPy arrays.

    A call uses ``serving_default`` when its input names are the keys given,
    else the signature whose input names are (an app's demo may expose more
    options than TF Serving clients send, e.g. translation's beam size).
    """

    def __init__(self, directory):
        self.directory = Path(directory)
        self._loaded = tf.saved_model.load(str(self.directory))  # keeps the variables alive
        self._signature = self._loaded.signatures["serving_default"]

    @property
    def note(self):
        """One line about the release for the tab."""
        return release_note(self.directory)

    def _signature_for(self, names):
        signatures = self._loaded.signatures
        for key in ("serving_default", *sorted(signatures)):
            if set(signatures[key].structured_input_signature[1]) == names:
                return signatures[key]
        raise ValueError(f"{self.directory} has no signature taking exactly {sorted(names)}")

    def __call__(self, inputs):
        signature = self._signature_for(set(inputs))
        outputs = signature(**{name: tf.constant(value) for name, value in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    def call(self, signature_name, **inputs):
        """Call the signature ``signature_name`` with NumPy inputs; NumPy outputs."""
        if signature_name not in self._loaded.signatures:
            raise ValueError(f"{self.directory} has no signature {signature_name!r}; it has {sorted(self._loaded.signatures)}")
        outputs = self._loaded.signatures[signature_name](**{k: tf.constant(v) for k, v in inputs.items()})
        return {name: value.numpy() for name, value in outputs.items()}


class GenerationReleases:
    """The demo's model of a generative app: its released SavedModels, one per choice (translation: language pair).

    Args:
        models_dir: folder of releases (``saved_models/``).
        releases: dict ``{choice: release folder name}``; choices without a
            release are left out (the tab says so when one is asked for).
        names: the app's ``apps.export.SignatureNames``.

    A request is a dict with ``choice``, the input text (or bytes), ``beam_size``
    and ``max_length``. :meth:`__call__` runs the ``<options>`` signature;
    :meth:`stream` runs ``stream_start`` / ``stream_step`` / ``stream_finish``
    and yields the text after every token, ending with exactly what
    :meth:`__call__` returns.

    Raises:
        FileNotFoundError: no choice has a release (says how to make one).
    """

    def __init__(self, models_dir, releases, names):
        from apps.export import read_settings

        self.models_dir = Path(models_dir)
        self.names = names
        self.models, self.settings, self.outdated = {}, {}, {}
        for choice, release in releases.items():
            try:
                version_dir = latest_version_dir(self.models_dir, release)
            except FileNotFoundError:
                continue
            try:
                settings = read_settings(version_dir)
            except FileNotFoundError:
                # A release written before the shared exporter (no assets/generation.json):
                # its signatures differ, so it is listed, not served.
                self.outdated[choice] = version_dir
                continue
            self.models[choice] = ReleasedModel(version_dir)
            self.settings[choice] = settings
        if not self.models:
            example = next(iter(releases.values()))
            old = "".join(
                f" {path} predates the current export format (no assets/generation.json); re-export it with "
                f"`tfsuite export <app> --checkpoint <its model.keras>`."
                for path in self.outdated.values()
            )
            raise FileNotFoundError(
                f"no servable release under {self.models_dir}/{example}/.{old} To make one: "
                f"`tfsuite train <app>` then `tfsuite export <app> --checkpoint runs/<app>/<run>/model.keras`"
            )

    @property
    def note(self):
        """The releases, one line each, for the tab."""
        return " ".join(model.note for model in self.models.values())

    def check(self, request):
        """ValueError with a message for the user unless a release can serve ``request``."""
        choice = request["choice"]
        if choice not in self.models:
            raise ValueError(f"No released model for {choice!r} yet (released: {', '.join(self.models)}).")
        settings = self.settings[choice]
        beams = int(request["beam_size"])
        if beams not in settings["beam_sizes"]:
            raise ValueError(f"Beam size must be one of {settings['beam_sizes']} for this model, got {beams}.")
        if not 1 <= int(request["max_length"]) <= settings["max_new_tokens"]:
            raise ValueError(f"Max length must be between 1 and {settings['max_new_tokens']} for this model.")
        return self.models[choice]

    def _inputs(self, request):
        return {
            self.names.input: np.array([request["input"]], dtype=object),
            "beam_size": np.int32(request["beam_size"]),
            "max_length": np.int32(request["max_length"]),
        }

    def __call__(self, request):
        model = self.check(request)
        return model.call(self.names.options, **self._inputs(request))

    def stream(self, request, should_stop=lambda: False):
        """Yield ``(text so far, status)`` after every generated token; the last pair is :meth:`__call__`'s."""
        model = self.check(request)
        names = self.settings[request["choice"]]["state_names"]
        state = model.call("stream_start", **self._inputs(request))
        status = state["status"][0].decode() if "status" in state else "ok"
        flat = {name: state[name] for name in names}
        while True:
            step = model.call("stream_step", **flat)
            flat = {name: step[name] for name in names}
            yield step["partial"][0].decode("utf-8"), status
            if not bool(step["running"]) or should_stop():
                break
        final = model.call("stream_finish", **flat)
        yield final[self.names.output][0].decode("utf-8"), final["status"][0].decode()

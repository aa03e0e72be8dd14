"""The shared Gradio UI: one ``gr.Blocks`` app with a tab per app.

Each tab is built from the app's declaration: ``ui_inputs`` / ``ui_outputs``
/ ``ui_examples`` for the components, ``load_release`` for the model, and a
predict function that runs ``app.preprocess`` -> the released SavedModel's
signature whose inputs are the preprocessed keys (``serving_default``
usually) -> ``app.postprocess``. The model is the one under
``saved_models/<app>/<latest version>/`` shipped in git, so a fresh clone runs
the demo without training, through the same signature TF Serving would serve.
Bad input (no image, an unreadable file, a sentence too long for the model)
becomes a ``gr.Error`` message in the UI, not a crash.

Example::

    tfsuite demo --port 7860            # or:
    from apps.ui import build_demo
    build_demo().launch(server_name="127.0.0.1", server_port=7860)
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo phones nobody

import gradio as gr  # noqa: E402
import tensorflow as tf  # noqa: E402

from apps.registry import app_names, get_app  # noqa: E402

__all__ = ["ReleasedModel", "build_demo", "guard_input", "latest_version_dir", "launch", "make_predict"]


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
        return _release_note(self.directory)

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


def make_predict(app, model):
    """The tab's predict function: preprocess, serve, postprocess; bad input -> ``gr.Error``.

    A ``ValueError`` from ``app.preprocess`` or from the model object (an
    app's ``load_release`` may check inputs against the release, such as a
    sentence longer than the model reads) is shown to the user.
    """

    def predict(*ui_values):
        try:
            outputs = model(app.preprocess(*ui_values))
        except ValueError as e:
            raise gr.Error(str(e)) from None
        return app.postprocess(outputs)

    predict.__name__ = f"predict_{app.name}"
    return predict


def guard_input(component):
    """Make ``component`` report an unreadable upload as a ``gr.Error`` message.

    Plain components let, for example, PIL's ``UnidentifiedImageError``
    escape as a generic processing error; the user should read what to do
    instead. The instance's ``preprocess`` is wrapped rather than subclassed
    because gradio writes a ``.pyi`` file next to any module that subclasses
    a component.
    """
    original = component.preprocess
    kind = "an image file (PNG or JPEG)" if isinstance(component, gr.Image) else "a valid file"

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the decoder raised, the fix is a readable upload
            raise gr.Error(f"Could not read the uploaded file ({type(e).__name__}); upload {kind}.") from None

    component.preprocess = preprocess
    return component


def _release_note(version_dir):
    """One line about the released version, from its MANIFEST.json entry when there is one."""
    note = f"Model: `{version_dir.parent.name}/{version_dir.name}`"
    manifest = version_dir.parent / "MANIFEST.json"
    if manifest.is_file():
        entry = json.loads(manifest.read_text()).get("versions", {}).get(version_dir.name, {})
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in entry.get("test_metrics", {}).items() if "loss" not in k)
        model = entry.get("config", {}).get("model")
        note += f" ({model}; {metrics})" if model and metrics else ""
    return note + "."


def build_demo(names=None, models_dir=None, examples_dir=None):
    """Build the ``gr.Blocks`` app: a tab per app with a released model.

    Args:
        names: list of app names, default all registered apps.
        models_dir: folder of released models, default the repository's ``saved_models/``.
        examples_dir: where apps may write example files, default a temporary folder.
    """
    from apps.cli import DEFAULT_MODELS_DIR

    models_dir = Path(models_dir or DEFAULT_MODELS_DIR)
    examples_dir = Path(examples_dir or tempfile.mkdtemp(prefix="tfsuite_examples_"))
    with gr.Blocks(title="tfsuite demos") as demo:
        gr.Markdown(
            "# tfsuite demos\nReleased models from `saved_models/`, served through their `serving_default` signature."
        )
        for name in names or app_names():
            app = get_app(name)
            with gr.Tab(app.title):
                try:
                    model = app.load_release(models_dir)
                except FileNotFoundError as e:
                    gr.Markdown(f"**{app.title}**: {e}")
                    continue
                gr.Markdown(f"{app.description}. {model.note}")
                with gr.Row():
                    with gr.Column():
                        inputs = [guard_input(component) for component in app.ui_inputs()]
                        button = gr.Button("Run", variant="primary")
                    with gr.Column():
                        outputs = app.ui_outputs()
                predict = make_predict(app, model)
                button.click(predict, inputs=inputs, outputs=outputs, api_name=name)
                examples = app.ui_examples(examples_dir)
                if examples:
                    gr.Examples(examples, inputs=inputs)
    return demo


def launch(host="127.0.0.1", port=7860, models_dir=None, block=True):
    """Build the demo and serve it on ``http://host:port``."""
    demo = build_demo(models_dir=models_dir)
    demo.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, allowed_paths=[])
    return demo

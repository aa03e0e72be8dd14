"""The shared Gradio UI: one ``gr.Blocks`` app with a tab per app.

Each tab is built from the app's declaration: ``ui_inputs`` / ``ui_outputs``
/ ``ui_examples`` for the components, ``load_release`` for the model, and a
predict function that runs ``app.preprocess`` -> the released SavedModel's
signature whose inputs are the preprocessed keys (``serving_default``
usually) -> ``app.postprocess``. Generative apps (``app.streaming``) stream
instead: their tab yields the output after every token, with a Stop button
(:func:`make_stream`). The model is the one under
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

import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo phones nobody

import gradio as gr  # noqa: E402

from apps.registry import app_names, get_app  # noqa: E402

__all__ = ["build_demo", "guard_input", "launch", "make_predict", "make_stream"]


def make_predict(app, model):
    """The tab's predict function: preprocess, serve, postprocess; bad input -> ``gr.Error``.

    A ``ValueError`` from ``app.preprocess``, from the model object (an
    app's ``load_release`` may check inputs against the release, such as a
    sentence longer than the model reads) or from ``app.postprocess`` (a row
    status the release reports, such as a context too long) is shown to the user.
    """

    def predict(*ui_values):
        try:
            return app.postprocess(model(app.preprocess(*ui_values)))
        except ValueError as e:
            raise gr.Error(str(e)) from None

    predict.__name__ = f"predict_{app.name}"
    return predict


def make_stream(app, releases):
    """A generative tab's function: a Gradio generator yielding the output after every generated token.

    ``app.preprocess`` turns the UI values into a request; the release's
    ``stream_*`` signatures run the decode loop step by step
    (``apps.releases.GenerationReleases.stream``), so the last text yielded is
    what the non-streaming signature returns (through ``app.stream_view``, which may
    add outputs beside the text, such as captioning's detected boxes). Bad input and an input longer
    than the model reads are ``gr.Error`` messages; an input mostly unknown to
    the vocabulary gets a warning beside the output.
    """

    def stream(*ui_values):
        try:
            request = app.preprocess(*ui_values)
            releases.check(request)
        except ValueError as e:
            raise gr.Error(str(e)) from None
        for index, (text, status) in enumerate(releases.stream(request)):
            if index == 0 and status == "truncated":
                if not getattr(app, "reads_truncated", False):
                    raise gr.Error("The text is too long for the model, which would cut it: split it into shorter parts.")
                gr.Warning("The text is longer than the model reads: the output covers its beginning only.")
            if index == 0 and status == "out_of_vocabulary":
                gr.Warning("Most of this input is unknown to the model's vocabulary: the output is a guess.")
            yield app.stream_view(text, request, releases)

    stream.__name__ = f"stream_{app.name}"
    return stream


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


def build_demo(names=None, models_dir=None, examples_dir=None):
    """Build the ``gr.Blocks`` app: a tab per app with a released model.

    Args:
        names: list of app names, default all registered apps.
        models_dir: folder of released models, default the repository's ``saved_models/``.
        examples_dir: where apps may write example files, default a temporary folder.
    """
    from apps.releases import DEFAULT_MODELS_DIR

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
                streaming = getattr(app, "streaming", False)
                with gr.Row():
                    with gr.Column():
                        components = app.ui_inputs(model) if streaming else app.ui_inputs()
                        inputs = [guard_input(component) for component in components]
                        with gr.Row():
                            button = gr.Button("Run", variant="primary")
                            stop = gr.Button("Stop", variant="stop") if streaming else None
                    with gr.Column():
                        outputs = app.ui_outputs()
                if streaming:
                    # always_last: a click while a translation streams runs after it, instead of being dropped.
                    event = button.click(
                        make_stream(app, model), inputs=inputs, outputs=outputs, api_name=name, trigger_mode="always_last"
                    )
                    stop.click(None, cancels=[event])
                else:
                    button.click(make_predict(app, model), inputs=inputs, outputs=outputs, api_name=name)
                examples = app.ui_examples(examples_dir, model) if streaming else app.ui_examples(examples_dir)
                if examples:
                    gr.Examples(examples, inputs=inputs)
    return demo


def launch(host="127.0.0.1", port=7860, models_dir=None, block=True):
    """Build the demo and serve it on ``http://host:port``."""
    demo = build_demo(models_dir=models_dir)
    demo.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block, allowed_paths=[])
    return demo

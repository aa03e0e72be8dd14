"""The translation tab of the Gradio demo: text in, translation out (textbook section 10.1).

The shared UI (``apps/ui.py``) builds the tab from the app's hooks; this
module implements them for :class:`~apps.translation.app.TranslationApp`:

- inputs: the English text, the language pair, the beam size (one of the
  export's :data:`~apps.translation.export.BEAM_SIZES`, 1 is greedy) and the
  maximum translation length in word pieces;
- output: the translation;
- examples: short sentences of the test split (fixed ones when the corpus is
  not built);
- :class:`TranslationReleases`, the tab's model: every released
  ``saved_models/translation_<pair>/<version>/`` SavedModel, called through
  its ``translate`` signature (``sentences``, ``beam_size``, ``max_length``),
  the same graph TF Serving runs for ``serving_default``.

Bad input never reaches the model: empty text, text over
:data:`MAX_INPUT_CHARACTERS`, a sentence with more word pieces than the
model reads (it would be cut silently), a language pair without a released
model, or a decoding option out of range raise ``ValueError`` with a message
for the user, which the UI shows.

Example::

    releases = TranslationReleases("saved_models")
    inputs = preprocess("Open the file.", "en_de", 4, 64)
    postprocess(releases(inputs))   # "Datei öffnen."
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from apps.translation.export import BEAM_SIZES, SETTINGS_FILE, TOKENIZERS_FOLDER

__all__ = [
    "LANGUAGES",
    "MAX_INPUT_CHARACTERS",
    "TranslationReleases",
    "postprocess",
    "preprocess",
    "ui_examples",
    "ui_inputs",
    "ui_outputs",
]

LANGUAGES = {"en_de": "English → German", "en_ja": "English → Japanese"}
# A paragraph, not a sentence: rejected before tokenization.
MAX_INPUT_CHARACTERS = 1000
DEFAULT_BEAM_SIZE = 4
DEFAULT_MAX_LENGTH = 64
FALLBACK_EXAMPLES = (
    "Open the file.",
    "Could not connect to the server.",
    "Save the document before closing it.",
    "Show hidden files and folders",
)
APP_NAME = "translation"


def release_name(language_pair):
    """``translation_<pair>``: the release folder under ``saved_models/``."""
    return f"{APP_NAME}_{language_pair}"


def ui_inputs(releases=None):
    """Text, language pair, beam size and maximum length components.

    The beam sizes and the length range are the released models' (the first
    release's defaults): ``releases``, else the :class:`TranslationReleases`
    loaded last (the shared UI loads the tab's model just before its components).
    """
    import gradio as gr

    beam_sizes, beam, longest = list(BEAM_SIZES), DEFAULT_BEAM_SIZE, DEFAULT_MAX_LENGTH
    releases = releases or TranslationReleases.loaded_last
    if releases is not None:
        settings = next(iter(releases.settings.values()))
        beam_sizes, beam, longest = settings["beam_sizes"], settings["num_beams"], settings["max_new_tokens"]
    return [
        gr.Textbox(label="English", lines=3, placeholder="Type an English sentence, e.g. Open the file."),
        gr.Dropdown(
            choices=[(label, pair) for pair, label in LANGUAGES.items()], value="en_de", label="Language"
        ),
        gr.Radio(choices=beam_sizes, value=beam, label="Beam size (1 = greedy search)"),
        gr.Slider(1, longest, value=longest, step=1, label="Max length (word pieces)"),
    ]


def ui_outputs():
    """The translation."""
    import gradio as gr

    return [gr.Textbox(label="Translation", lines=3)]


def ui_examples(cache_dir=None, count=4, releases=None):
    """Example rows ``[text, "en_de", beam, max length]``: short test-split sentences when the corpus is built."""
    sentences = list(FALLBACK_EXAMPLES)
    try:
        import tensorflow_datasets as tfds

        import pipelines.corpora.translation  # noqa: F401 - registers the builder
        from pipelines.corpora import sources

        dataset = tfds.load("tfsuite_translation/en_de", split="test", data_dir=str(sources.data_dir()))
        picked = []
        for example in dataset.take(200).as_numpy_iterator():
            text = example["en"].decode("utf-8")
            if 3 <= len(text.split()) <= 10:
                picked.append(text)
            if len(picked) == count:
                break
        sentences = picked or sentences
    except Exception:  # noqa: BLE001 - a demo without the built corpus still shows examples
        pass
    beam, longest = DEFAULT_BEAM_SIZE, DEFAULT_MAX_LENGTH
    releases = releases or TranslationReleases.loaded_last
    if releases is not None:
        settings = next(iter(releases.settings.values()))
        beam, longest = settings["num_beams"], settings["max_new_tokens"]
    return [[text, "en_de", beam, longest] for text in sentences[:count]]


def preprocess(text, language_pair="en_de", beam_size=DEFAULT_BEAM_SIZE, max_length=DEFAULT_MAX_LENGTH):
    """UI values -> the ``translate`` signature's inputs plus ``language_pair`` (which release).

    Raises:
        ValueError: empty text, text longer than :data:`MAX_INPUT_CHARACTERS`,
            an unknown language pair, or decoding options out of range.
    """
    if text is None or not str(text).strip():
        raise ValueError("Nothing to translate: type an English sentence.")
    text = " ".join(str(text).split())
    if len(text) > MAX_INPUT_CHARACTERS:
        raise ValueError(
            f"The text is {len(text)} characters long; the model translates at most {MAX_INPUT_CHARACTERS} "
            "characters at a time: split it into sentences."
        )
    if language_pair not in LANGUAGES:
        raise ValueError(f"Unknown language {language_pair!r}; choose one of: {', '.join(LANGUAGES)}.")
    if beam_size is None or int(beam_size) not in BEAM_SIZES:
        raise ValueError(f"Beam size must be one of {', '.join(map(str, BEAM_SIZES))}, got {beam_size}.")
    if max_length is None or int(max_length) < 1:
        raise ValueError(f"Max length must be at least 1 word piece, got {max_length}.")
    return {
        "language_pair": language_pair,
        "sentences": np.array([text], dtype=object),
        "beam_size": np.int32(beam_size),
        "max_length": np.int32(max_length),
    }


def postprocess(outputs):
    """The ``translate`` outputs -> the first translation as ``str``."""
    first = np.asarray(outputs["translations"]).reshape(-1)[0]
    return first.decode("utf-8") if isinstance(first, bytes) else str(first)


class TranslationReleases:
    """The tab's model: every released translation SavedModel, chosen by ``language_pair``.

    Args:
        models_dir: folder of releases (``saved_models/``).

    Call: ``releases(inputs)`` with :func:`preprocess`'s dict returns the
    ``translate`` signature's outputs as NumPy arrays.

    Raises:
        FileNotFoundError: no language pair has a release (says how to make one).
    """

    loaded_last = None  # the tab's components follow the release loaded for it

    def __init__(self, models_dir):
        from apps.ui import ReleasedModel, latest_version_dir
        from pipelines.wordpiece import WordpieceTokenizer

        self.models_dir = Path(models_dir)
        self.models, self.settings, self.source_tokenizers = {}, {}, {}
        for pair in LANGUAGES:
            try:
                version_dir = latest_version_dir(self.models_dir, release_name(pair))
            except FileNotFoundError:
                continue
            self.models[pair] = ReleasedModel(version_dir)
            assets = version_dir / "assets"
            self.settings[pair] = json.loads((assets / SETTINGS_FILE).read_text())
            self.source_tokenizers[pair] = WordpieceTokenizer.load(assets / TOKENIZERS_FOLDER / "source")
        if not self.models:
            raise FileNotFoundError(
                f"no released translation model under {self.models_dir}/{release_name('<pair>')}/; train and export "
                f"one: `tfsuite train translation` then "
                f"`tfsuite export translation --checkpoint runs/translation/en_de/model.keras`"
            )
        TranslationReleases.loaded_last = self

    @property
    def note(self):
        """The releases, one line each, for the tab."""
        return " ".join(f"{LANGUAGES[pair]}: {model.note}" for pair, model in self.models.items())

    @property
    def directories(self):
        """``{language_pair: version folder}`` of the loaded releases."""
        return {pair: model.directory for pair, model in self.models.items()}

    def check(self, inputs):
        """ValueError with a message for the user unless the released model can translate ``inputs`` uncut."""
        pair = inputs["language_pair"]
        if pair not in self.models:
            released = ", ".join(LANGUAGES[p] for p in self.models)
            raise ValueError(
                f"No released model for {LANGUAGES.get(pair, pair)} yet (released: {released}); train and export "
                f"one with `tfsuite train translation --language-pair {pair}`."
            )
        settings = self.settings[pair]
        if int(inputs["beam_size"]) not in settings["beam_sizes"]:
            raise ValueError(f"Beam size must be one of {settings['beam_sizes']} for this model.")
        if int(inputs["max_length"]) > settings["max_new_tokens"]:
            raise ValueError(f"Max length must be at most {settings['max_new_tokens']} word pieces for this model.")
        import tensorflow as tf

        pieces = int(self.source_tokenizers[pair].tokenize(tf.constant(inputs["sentences"])).row_lengths()[0])
        room = settings["source_length"] - 2 if settings["source_markers"] else settings["source_length"]
        if pieces > room:
            raise ValueError(
                f"The text is too long for the model: {pieces} word pieces, it reads at most {room}; "
                "split it into shorter sentences."
            )

    def __call__(self, inputs):
        self.check(inputs)
        signature_inputs = {k: v for k, v in inputs.items() if k != "language_pair"}
        return self.models[inputs["language_pair"]](signature_inputs)

"""The ``translation`` app: English to German (or Japanese) with the chapter 5 Transformer (textbook section 10.1).

A declaration over the shared text-to-text engine (``apps/seq2seq.py``):
the corpus (``tfsuite_translation/en_de`` or ``/en_ja``, or a real TFDS
dataset such as ``wmt14_translate/de-en``), the target language (spacing
rules after WordPiece, BLEU tokenizer), corpus BLEU and chrF (sacrebleu), and
the baseline every release must beat: the English source copied unchanged
(``copy_bleu``, ``copy_chrf``, in the same run on the same split). Training,
decoding, evaluation, export (SavedModel for TF Serving, TFLite) and the
streaming demo tab are the engine's.

Example::

    tfsuite train translation                                     # en-de, runs/translation/en_de/
    tfsuite evaluate translation                                  # the latest release's SavedModel
    tfsuite evaluate translation --checkpoint runs/translation/en_de/model.keras
    tfsuite train translation --language-pair en_ja               # same code, Japanese targets
    tfsuite train translation --dataset wmt14_translate/de-en     # a real TFDS dataset, if prepared
"""

from __future__ import annotations

from dataclasses import dataclass

from apps import metrics
from apps.config import ConfigError, option
from apps.export import SignatureNames
from apps.seq2seq import Seq2SeqApp, Seq2SeqConfig
from pipelines import tfds_sources

__all__ = ["LANGUAGES", "MAX_INPUT_CHARACTERS", "TranslationApp", "TranslationConfig"]

LANGUAGE_PAIRS = {"en_de": "tfsuite_translation/en_de", "en_ja": "tfsuite_translation/en_ja"}
LANGUAGES = {"en_de": "English → German", "en_ja": "English → Japanese"}
# A paragraph, not a sentence: rejected before tokenization.
MAX_INPUT_CHARACTERS = 1000
FALLBACK_EXAMPLES = (
    "Open the file.",
    "Could not connect to the server.",
    "Save the document before closing it.",
    "Show hidden files and folders",
)


@dataclass
class TranslationConfig(Seq2SeqConfig):
    """Hyperparameters of the translation app (defaults: the release v2 recipe, see saved_models/translation_en_de)."""

    language_pair: str = option("en_de", f"our offline corpus: {', '.join(LANGUAGE_PAIRS)}")
    epochs: int = option(9, "number of training epochs (of steps_per_epoch batches each)")
    learning_rate: float = option(1.5e-3, "peak learning rate (after warmup) of Adam")
    patience: int = option(0, "early stopping: epochs without val_loss improvement (0 disables: the cosine schedule sets the length)")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    precision: str = option("auto", "auto (bf16 where the chip has it, else float32), float32, mixed_bfloat16 or mixed_float16")
    steps_per_epoch: int = option(1000, "batches per epoch from the continuous stream of shuffled passes")
    checkpoint_steps: int = option(250, "also save a resumable checkpoint every N training steps")
    keep_checkpoints: int = option(8, "step checkpoints kept (the newest)")
    average_checkpoints: int = option(8, "final model = the average of the N newest step checkpoints")
    batch_size: int = option(512, "most pairs per batch (batch_tokens sets the size)")
    shared_vocab: bool = option(True, "one WordPiece vocabulary for English and the target language")
    share_embeddings: bool = option(True, "one embedding matrix for source, target and output")
    dropout: float = option(0.2, "dropout rate")
    activation_dropout: float = option(0.0, "dropout on the FFN hidden units")
    no_repeat_ngram_size: int = option(3, "forbid repeating any 3-gram in a translation (0 disables)")

    def __post_init__(self):
        super().__post_init__()
        if self.language_pair not in LANGUAGE_PAIRS:
            raise ConfigError(f"language_pair must be one of {list(LANGUAGE_PAIRS)}, got {self.language_pair!r}")
        if self.dataset:
            try:
                tfds_sources.get_source("translation", self.dataset)
            except ValueError as e:
                raise ConfigError(str(e)) from None


class TranslationApp(Seq2SeqApp):
    """English to German / Japanese translation, scored by corpus BLEU and chrF (sacrebleu) against copying."""

    name = "translation"
    title = "Translation"
    description = "translate English to German (or Japanese) with a Transformer and beam search; BLEU, chrF"
    Config = TranslationConfig
    task = "translation"
    names = SignatureNames(input="sentences", output="translations", options="translate", tokens="translate_tokens")
    baseline_name = "copy"
    mix_prefix = "translate English to German: "

    def dataset_name(self, config):
        return config.dataset or LANGUAGE_PAIRS[config.language_pair]

    def default_run_name(self, config):
        return self.dataset_name(config).split("/")[-1].replace("-", "_")

    def release_name(self, config):
        """Folder under ``saved_models/``: ``translation_en_de``, ``translation_en_ja``, ..."""
        return f"{self.name}_{self.default_run_name(config)}"

    def language(self, config):
        """Target language code (``"de"``, ``"ja"``): the dataset's target feature name."""
        return self.source_of(config).target.split("/")[-1]

    def score(self, hypotheses, references, config):
        return metrics.corpus_scores(hypotheses, references, self.language(config))

    def baseline(self, sources, config):
        """The English source copied unchanged: what a model must clearly beat."""
        return list(sources)

    # --- the demo tab (built by apps/ui.py) ------------------------------------------------

    def load_release(self, models_dir):
        from apps.releases import GenerationReleases

        return GenerationReleases(models_dir, {pair: f"{self.name}_{pair}" for pair in LANGUAGES}, self.names)

    def ui_inputs(self, releases=None):
        """English text, language pair, beam size and maximum length (ranges from the first release)."""
        import gradio as gr

        settings = next(iter(releases.settings.values())) if releases else {"beam_sizes": [1, 2, 3, 4],
                                                                              "num_beams": 4, "max_new_tokens": 64}
        return [
            gr.Textbox(label="English", lines=3, placeholder="Type an English sentence, e.g. Open the file."),
            gr.Dropdown(choices=[(label, pair) for pair, label in LANGUAGES.items()], value="en_de", label="Language"),
            gr.Slider(min(settings["beam_sizes"]), max(settings["beam_sizes"]), value=settings["num_beams"], step=1,
                      label="Beam size (1 = greedy search)"),
            gr.Slider(1, settings["max_new_tokens"], value=settings["max_new_tokens"], step=1,
                      label="Max length (word pieces)"),
        ]

    def ui_outputs(self):
        import gradio as gr

        return [gr.Textbox(label="Translation", lines=3)]

    def ui_examples(self, cache_dir, releases=None):
        """Short test-split sentences when the corpus is built, else fixed ones."""
        try:
            sentences = [s for s in self.load_texts(self.Config(), "test")[0][:200] if 3 <= len(s.split()) <= 10][:4]
        except Exception:  # noqa: BLE001 - a demo without the built corpus still shows examples
            sentences = []
        settings = next(iter(releases.settings.values())) if releases else {"num_beams": 4, "max_new_tokens": 64}
        return [[text, "en_de", settings["num_beams"], settings["max_new_tokens"]]
                for text in (sentences or FALLBACK_EXAMPLES)]

    def preprocess(self, text, language_pair="en_de", beam_size=4, max_length=64):
        """UI values -> a ``GenerationReleases`` request; ValueError with a message for the user on bad input."""
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
        beam_size, max_length = self.check_options(beam_size, max_length)
        return {"choice": language_pair, "input": text, "beam_size": beam_size, "max_length": max_length}

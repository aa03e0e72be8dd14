"""The App declaration: what one task contributes to the shared framework.

An app (Fashion-MNIST classification now; translation, summarization, QA,
code generation, captioning and speech recognition later) declares only its
data, model builder, metric and pre/post-processing (STYLE.md convention 7).
Training, evaluation, export, serving and the UI are shared code in
``apps/trainer.py``, ``apps/cli.py`` and ``apps/ui.py`` that call every app
through the methods below, the same way.

Example::

    class MyApp(App):
        name = "my_app"
        title = "My app"
        Config = MyConfig

        def build_datasets(self, config): ...
        def build_model(self, config): ...
        def compile_kwargs(self, config): ...
        def serving_signature(self, config): ...
        def serving_outputs(self, model, inputs, config): ...
        def serving_example(self, config): ...
        def ui_inputs(self): ...
        def ui_outputs(self): ...
        def preprocess(self, *ui_values): ...
        def postprocess(self, outputs): ...
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar, NamedTuple

from apps.config import TrainConfig

__all__ = ["App", "Datasets"]


class Datasets(NamedTuple):
    """The three splits an app trains, selects and reports on (``tf.data.Dataset`` each)."""

    train: Any
    validation: Any
    test: Any


class App(abc.ABC):
    """Base class of an app declaration.

    Class attributes:
        name: str, registry and CLI name (``tfsuite train <name>``), also the
            folder under ``runs/`` and ``saved_models/``.
        title: str, the UI tab title.
        description: str, one line for ``tfsuite --help``.
        Config: the app's config dataclass, a :class:`~apps.config.TrainConfig` subclass.
        monitor: str, the validation metric for checkpoint selection and early stopping.
        monitor_mode: ``"max"`` or ``"min"``.
    """

    name: ClassVar[str]
    title: ClassVar[str]
    description: ClassVar[str] = ""
    Config: ClassVar[type[TrainConfig]] = TrainConfig
    monitor: ClassVar[str] = "val_loss"
    monitor_mode: ClassVar[str] = "min"

    # --- data, model, metric -------------------------------------------------

    def default_run_name(self, config) -> str:
        """Run folder name when ``--run-name`` is not given."""
        return "run"

    def release_name(self, config) -> str:
        """Release folder under ``saved_models/`` and TF Serving model name; default the app name."""
        return self.name

    @abc.abstractmethod
    def build_datasets(self, config) -> Datasets:
        """Return the train / validation / test ``tf.data`` pipelines."""

    @abc.abstractmethod
    def build_model(self, config):
        """Return an uncompiled, built ``keras.Model``."""

    @abc.abstractmethod
    def compile_kwargs(self, config) -> dict:
        """Keyword arguments for ``model.compile``: optimizer, loss, metrics."""

    # XLA for the training step, per precision, where it was measured to be faster
    # (``benchmarks/training.py``); ``--jit-compile`` / ``--no-jit-compile`` override it.
    xla_faster: ClassVar[dict] = {"float32": False, "mixed_bfloat16": False, "mixed_float16": True}

    def jit_compile(self, config) -> bool:
        """Whether ``fit`` compiles the step with XLA: ``config.jit_compile``, else :attr:`xla_faster`."""
        if config.jit_compile is not None:
            return bool(config.jit_compile)
        return bool(self.xla_faster.get(config.precision, False))

    def steps_per_epoch(self, config, train) -> int:
        """Training steps per epoch: ``config.steps_per_epoch``, else the batches of one pass of ``train``.

        The default counts them (the dataset's cardinality, else one pass);
        apps whose batching makes counting slow compute it instead.
        """
        if config.steps_per_epoch is not None:
            return config.steps_per_epoch
        import tensorflow as tf

        count = int(train.cardinality())
        if count == tf.data.INFINITE_CARDINALITY:
            raise ValueError(f"app {self.name}: the training dataset is infinite; set --steps-per-epoch")
        if count < 0:
            count = int(train.reduce(0, lambda n, _: n + 1))
        if count < 1:
            raise ValueError(f"app {self.name}: the training split yields no batch")
        return count

    def evaluate(self, model, config) -> dict:
        """Metrics on the test split, keys prefixed ``test_`` (``test_accuracy``, ...).

        The default runs ``model.evaluate`` with the compiled metrics; apps with
        generation metrics (BLEU, ROUGE, WER) override it.
        """
        results = model.evaluate(self.build_datasets(config).test, return_dict=True, verbose=0)
        return {f"test_{key}": float(value) for key, value in results.items()}

    # --- serving (SavedModel ``serving_default``) --------------------------------

    @abc.abstractmethod
    def serving_signature(self, config) -> dict:
        """``{input_name: tf.TensorSpec}`` of the exported ``serving_default`` signature."""

    @abc.abstractmethod
    def serving_outputs(self, model, inputs, config) -> dict:
        """Traced inside the export: ``{output_name: tensor}`` from the ``inputs`` dict."""

    def more_signatures(self, config) -> dict:
        """Signatures beside ``serving_default`` in the shared export: ``{name: (input specs, outputs function)}``,
        the function called as :meth:`serving_outputs` is (``(model, inputs, config)``). Default none."""
        return {}

    @abc.abstractmethod
    def serving_example(self, config) -> dict:
        """A small batch of serving inputs (from the test split) used to check an export."""

    # --- TFLite (optional; ``tfsuite export <app> --format tflite``) ----------------------

    supports_tflite: ClassVar[bool] = False

    def export_tflite(self, saved_model_dir, output_dir) -> dict:
        """Convert a released SavedModel to TFLite files under ``output_dir``: ``{"float": path, "int8": path}``."""
        raise NotImplementedError(f"app {self.name} has no TFLite export")

    # --- scoring a predictor on the test split (the release, TFLite, comparisons) ---------
    # An app that declares test_examples, score and release_predictions gets score_batches
    # and evaluate_saved_model from here; apps with their own decoding loop override them.

    check_slice: ClassVar[int] = 200  # test inputs whose outputs a release records (checks/<version>.json)

    def test_examples(self, config) -> tuple:
        """The test split: ``({serving input name: [str, ...]}, references)``, one reference per row."""
        raise NotImplementedError(
            f"app {self.name} cannot evaluate a released SavedModel; pass --checkpoint runs/{self.name}/<run>/model.keras"
        )

    def score(self, predictions, references, config) -> dict:
        """The app's metrics of ``predictions`` against ``references`` (lists of one row each)."""
        raise NotImplementedError(f"app {self.name} declares no score")

    def release_predictions(self, outputs) -> list:
        """``serving_default``'s outputs (dict of arrays) -> the predictions :meth:`score` takes."""
        raise NotImplementedError(f"app {self.name} declares no release_predictions")

    def comparisons(self, config) -> dict:
        """Figures printed beside the model's in the same run (baselines, other models); none by default."""
        return {}

    def score_batches(self, predict, config, prefix=""):
        """``predict`` (a batch ``{input name: [str]}`` -> list of predictions) over the test split in batches of
        ``config.eval_batch_size``: ``({prefix + metric: value}, predictions)``."""
        inputs, references = self.test_examples(config)
        size = getattr(config, "eval_batch_size", 32)
        predicted = []
        for begin in range(0, len(references), size):
            predicted.extend(predict({name: column[begin:begin + size] for name, column in inputs.items()}))
        return {prefix + k: v for k, v in self.score(predicted, references, config).items()}, predicted

    def evaluate_saved_model(self, version_dir, config, record=False) -> dict:
        """Test metrics of the released SavedModel in ``version_dir`` (its ``serving_default``, what TF Serving
        answers) and :meth:`comparisons`, in one run.

        ``tfsuite evaluate <app>`` without ``--checkpoint`` runs this on the
        latest release, so the figures are those of what is deployed; with
        ``record`` (``--record``) they are also written into the release: the
        figures as ``release_evaluation`` in its MANIFEST.json entry, the first
        :attr:`check_slice` test inputs with their outputs as ``checks/<version>.json``.
        """
        import numpy as np

        from apps.releases import ReleasedModel, record_release_evaluation, recorded_manifest

        inputs, references = self.test_examples(config)
        if record:
            recorded_manifest(version_dir)  # before the evaluation, not after it
        released = ReleasedModel(version_dir)

        def predict(batch):
            return self.release_predictions(released({k: np.array(v, dtype=object) for k, v in batch.items()}))

        results, predicted = self.score_batches(predict, config)
        results.update(self.comparisons(config))
        if record:
            head = self.check_slice
            check = {"split": f"test[:{head}]", "metrics": self.score(predicted[:head], references[:head], config),
                     "inputs": {k: v[:head] for k, v in inputs.items()}, "references": references[:head],
                     "outputs": predicted[:head]}
            evaluation = {"metrics": results, "dataset": getattr(config, "dataset", "") or f"tfsuite_{self.name}",
                          "test_inputs": len(references)}
            for path in record_release_evaluation(version_dir, evaluation, check):
                print(f"recorded {path}", flush=True)
        return results

    def evaluate_tflite(self, release_dir, kind, config) -> dict:
        """Test metrics of ``release_dir/tflite``'s ``kind`` (``"float"`` or ``"int8"``) model, as :meth:`evaluate`."""
        raise NotImplementedError(f"app {self.name} has no TFLite export")

    def release_model(self, model, config, folder):
        """``(network, config)`` the shared exporter writes for the trained ``model``; files written into
        ``folder`` go to the release's ``assets/``. Default: ``model`` and ``config`` as they are (QA prunes
        the vocabulary to the tokens its corpora use and writes that ``vocab.txt``)."""
        return model, config

    def write_saved_model(self, model, config, directory):
        """Write the release SavedModel yourself; return ``None`` (default) to let the shared exporter.

        The shared exporter (``apps.export.export_saved_model``) writes
        ``serving_default`` from :meth:`serving_signature` and
        :meth:`serving_outputs`. Apps whose release holds more (translation:
        decoding-option and token signatures, its tokenizers) override this
        and return ``directory``; ``serving_default`` must still follow
        :meth:`serving_signature`.
        """
        return None

    # --- UI (gradio is imported only when the UI is built) ------------------------

    @abc.abstractmethod
    def ui_inputs(self) -> list:
        """Gradio input components of the app's tab."""

    @abc.abstractmethod
    def ui_outputs(self) -> list:
        """Gradio output components of the app's tab."""

    def ui_examples(self, cache_dir) -> list:
        """Example rows for the tab (may write files under ``cache_dir``); none by default."""
        return []

    # serving inputs that load_release's default passes on to postprocess beside the outputs (QA: the context)
    echo_inputs: ClassVar[tuple] = ()

    def load_release(self, models_dir):
        """The demo tab's model: a callable from the preprocessed inputs to output arrays, with a ``note``.

        Default: the latest version under ``<models_dir>/<name>/``
        (:class:`apps.releases.ReleasedModel`), its outputs joined by the
        :attr:`echo_inputs`. Raise ``FileNotFoundError`` saying how to make a
        release when there is none.
        """
        from apps.releases import ReleasedModel, latest_version_dir

        released = ReleasedModel(latest_version_dir(models_dir, self.name))
        if not self.echo_inputs:
            return released

        def answer(inputs):
            return {**released(inputs), **{name: inputs[name] for name in self.echo_inputs}}

        answer.note = released.note
        return answer

    def stream_view(self, text, request, releases):
        """What a streaming tab (``streaming = True``) shows after each token: the text so far by default;
        an app with more outputs returns them too (captioning: the image with its detected boxes)."""
        return text

    @abc.abstractmethod
    def preprocess(self, *ui_values) -> dict:
        """UI input values -> the serving signature's inputs (a dict of arrays).

        Raise ``ValueError`` with a message for the user on empty or unreadable
        input; the UI shows it instead of crashing.
        """

    @abc.abstractmethod
    def postprocess(self, outputs):
        """The serving signature's outputs (dict of arrays) -> the UI output value(s)."""

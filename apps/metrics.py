"""Scoring generated text: the one scoring loop, the evaluation record, and the field's standard metrics.

Every generative app scores the same way, whatever runs the generation (the
Keras model through the Python decoder, a released SavedModel, a TFLite
model): :func:`score_generations` feeds the inputs to a ``generate_batch``
callable in batches, times it, and returns the hypotheses with the metric
dict; :func:`write_evaluation` writes the run's ``evaluation.json`` (the
release manifest copies it).

Metrics are maintained libraries' implementations, never our own:

* ``bleu`` / ``chrf``: sacrebleu's corpus BLEU (``13a`` tokenizer; for
  Japanese ``ja-mecab`` when ``mecab-python3`` + ``ipadic`` are installed,
  else ``char``) and chrF (character 6-grams, beta 2), as for WMT;
* ``rouge1`` / ``rouge2`` / ``rougeL``: Google's ``rouge-score`` (the
  reference implementation of Lin 2004 used by the T5 and PEGASUS papers),
  F-measure with the Porter stemmer, averaged over examples, in percent;
* ``exact_match`` / ``f1``: the SQuAD v1.1 answer metrics (:func:`squad_scores`);
  the one metric written here, because its reference is a script, not a
  package: the official ``evaluate-v1.1.py`` (Rajpurkar et al., 2016), whose
  normalization and token F1 are copied exactly; the maintained wrapper,
  Hugging Face ``evaluate``, downloads that script from the Hub at run time,
  which fails offline;
* :func:`novel_word_share`: how abstractive summaries are (share of their
  words not in the text);
* :func:`repetition_rate`: the share of outputs caught in a loop (an n-gram of
  3 or more tokens repeated 3 or more times), the symptom of an under-trained
  decoder.

Example::

    from apps.metrics import corpus_scores, score_generations

    scores, hypotheses, seconds = score_generations(
        translate_batch, sources, lambda hyps: corpus_scores(hyps, references, "de"), label="beam 4")
"""

from __future__ import annotations

import collections
import datetime
import functools
import json
import re
import string
import time
from pathlib import Path

import sacrebleu

_SQUAD_PUNCTUATION = set(string.punctuation)

__all__ = [
    "bleu_tokenizer",
    "corpus_bleu",
    "corpus_chrf",
    "corpus_scores",
    "novel_word_share",
    "squad_scores",
    "repetition_rate",
    "rouge_signature",
    "rouge_scores",
    "score_generations",
    "signatures",
    "write_evaluation",
]

# Languages written without spaces between words.
_UNSPACED = ("ja",)


@functools.lru_cache(maxsize=None)
def _mecab_available():
    try:
        from sacrebleu.tokenizers.tokenizer_ja_mecab import TokenizerJaMecab

        TokenizerJaMecab()("テスト")  # imports MeCab and loads the ipadic dictionary
    except Exception:  # noqa: BLE001 - missing package, missing dictionary, or a broken build: fall back
        return False
    return True


def bleu_tokenizer(language):
    """sacrebleu's BLEU tokenizer for target ``language``: its default (13a), or ja-mecab / char for Japanese."""
    if language in _UNSPACED:
        return "ja-mecab" if _mecab_available() else "char"
    return sacrebleu.BLEU.TOKENIZER_DEFAULT


def _check(hypotheses, references):
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"got {len(hypotheses)} hypotheses for {len(references)} references; they must pair up")
    if not references:
        raise ValueError("no sentences to score: pass at least one hypothesis and reference")
    for name, texts in (("hypotheses", hypotheses), ("references", references)):
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"{name} must be str (detokenized text), got {type(bad).__name__}")
    return hypotheses, references


def _bleu(language):
    return sacrebleu.BLEU(tokenize=bleu_tokenizer(language))


def corpus_bleu(hypotheses, references, language="de"):
    """Corpus BLEU (0-100) of ``hypotheses`` against one reference each."""
    hypotheses, references = _check(hypotheses, references)
    return float(_bleu(language).corpus_score(hypotheses, [references]).score)


def corpus_chrf(hypotheses, references):
    """Corpus chrF (0-100), sacrebleu's defaults (character 6-grams, beta 2, no word n-grams)."""
    hypotheses, references = _check(hypotheses, references)
    return float(sacrebleu.CHRF().corpus_score(hypotheses, [references]).score)


def corpus_scores(hypotheses, references, language="de"):
    """``{"bleu": ..., "chrf": ...}`` of one corpus."""
    return {"bleu": corpus_bleu(hypotheses, references, language), "chrf": corpus_chrf(hypotheses, references)}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(hypotheses, references):
    """``{"rouge1", "rouge2", "rougeL"}``: mean F-measure (percent) over examples, Porter stemming on."""
    from rouge_score import rouge_scorer

    _check(hypotheses, references)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        for name, score in scorer.score(reference, hypothesis).items():
            totals[name] += score.fmeasure
    return {name: 100.0 * total / len(hypotheses) for name, total in totals.items()}


def rouge_signature():
    """What :func:`rouge_scores` computes, e.g. ``rouge-score:0.1.2|rouge1,rouge2,rougeL|stem:yes|F-measure|mean``."""
    from importlib.metadata import version

    return f"rouge-score:{version('rouge-score')}|{','.join(ROUGE_TYPES)}|stem:yes|F-measure|mean"


_WORD = re.compile(r"\w+")


def novel_word_share(summaries, texts):
    """Share of the summaries' words (lower-cased, over all summaries) that do not occur in their text."""
    novel = total = 0
    for summary, text in zip(summaries, texts):
        words = _WORD.findall(summary.lower())
        seen = set(_WORD.findall(text.lower()))
        novel += sum(word not in seen for word in words)
        total += len(words)
    return novel / total if total else 0.0


def _squad_normalize(text):
    """SQuAD v1.1's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _SQUAD_PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _squad_f1(prediction, truth):
    predicted, true = _squad_normalize(prediction).split(), _squad_normalize(truth).split()
    common = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions, answers):
    """SQuAD v1.1 ``exact_match`` and ``f1`` (fractions in [0, 1]), each the best over a question's gold answers.

    Args:
        predictions: list of str, one answer per question.
        answers: list of lists of str, the gold answers of each question.
    """
    if len(predictions) != len(answers) or not predictions:
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} questions: give one answer per question")
    if any(not golds for golds in answers):
        raise ValueError("every question needs at least one gold answer")
    exact = [max(float(_squad_normalize(p) == _squad_normalize(g)) for g in golds) for p, golds in zip(predictions, answers)]
    f1 = [max(_squad_f1(p, g) for g in golds) for p, golds in zip(predictions, answers)]
    return {"exact_match": sum(exact) / len(exact), "f1": sum(f1) / len(f1)}


def signatures(language="de"):
    """sacrebleu's signature strings of BLEU and chrF, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|...``."""
    bleu = _bleu(language)
    chrf = sacrebleu.CHRF()
    for metric in (bleu, chrf):
        metric.corpus_score(["a"], [["a"]])  # sacrebleu knows the reference count only after scoring
    return {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}


def _loops(tokens, min_n=3, min_repeats=3):
    """True if some n-gram (n >= ``min_n``) occurs ``min_repeats`` times back to back."""
    for n in range(min_n, len(tokens) // min_repeats + 1):
        for start in range(len(tokens) - n * min_repeats + 1):
            gram = tokens[start : start + n]
            if all(tokens[start + k * n : start + (k + 1) * n] == gram for k in range(1, min_repeats)):
                return True
    return False


def repetition_rate(texts, min_n=3, min_repeats=3):
    """Share of ``texts`` with an n-gram of ``min_n`` or more words repeated ``min_repeats`` or more times in a row.

    Words are whitespace-separated, or characters for text without spaces
    (Japanese), so "Datei öffnen Datei öffnen Datei öffnen" and
    "ファイルファイルファイル" both count.
    """
    texts = list(texts)
    if not texts:
        return 0.0
    looping = 0
    for text in texts:
        tokens = text.split()
        if len(tokens) <= 1:
            tokens = list(text)
        looping += _loops(tokens, min_n, min_repeats)
    return looping / len(texts)


def score_generations(generate_batch, inputs, scorer, label, batch_size=64, log=print):
    """The one scoring loop: generate for ``inputs`` in batches, time it, score the hypotheses.

    Args:
        generate_batch: callable, a list of inputs -> a list of str.
        inputs: list of inputs (sentences, image bytes, ...).
        scorer: callable, the list of hypotheses -> a dict of metrics.
        label: str, what generated (printed with the speed).
        batch_size: int, inputs per call. Default 64.
        log: callable taking one line. Default ``print``.

    Returns:
        ``(scores, hypotheses, seconds)``.
    """
    inputs = list(inputs)
    if not inputs:
        raise ValueError(f"{label}: nothing to score (no inputs)")
    start = time.perf_counter()
    hypotheses = []
    for begin in range(0, len(inputs), batch_size):
        hypotheses.extend(generate_batch(inputs[begin : begin + batch_size]))
    seconds = time.perf_counter() - start
    if len(hypotheses) != len(inputs):
        raise ValueError(f"{label}: {len(hypotheses)} outputs for {len(inputs)} inputs")
    log(f"{label}: {len(inputs)} test inputs in {seconds:.1f} s ({len(inputs) / seconds:.1f}/s)")
    return scorer(hypotheses), hypotheses, seconds


def write_evaluation(directory, record):
    """Write ``record`` (+ a ``finished`` time) as ``<directory>/evaluation.json``; return the path."""
    path = Path(directory) / "evaluation.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**record, "finished": datetime.datetime.now().isoformat(timespec="seconds")}
    path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path

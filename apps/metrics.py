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
* ``bleu4`` / ``cider``: the COCO caption metrics, ``pycocoevalcap``'s
  pure-Python ``Bleu(4)`` and ``Cider`` (CIDEr-D, IDF from the references of
  the scored split), on lower-cased captions with punctuation removed, the
  rule of its Java ``PTBTokenizer`` (left out: it needs a JVM);
* :func:`novel_word_share`: how abstractive summaries are (share of their
  words not in the text);
* :func:`repetition_rate`: the share of outputs caught in a loop (an n-gram of
  3 or more tokens repeated 3 or more times), the symptom of an under-trained
  decoder;
* code: :func:`syntax_valid_rate` (share that :func:`ast.parse` accepts),
  :func:`pass_at_k` / :func:`corpus_pass_at_k` (the unbiased pass@k estimator
  of Chen et al. 2021, from execution results of ``code_tools.execution``) and
  :func:`code_bleu` (sacrebleu BLEU over :mod:`tokenize` tokens).

Example::

    from apps.metrics import corpus_scores, score_generations

    scores, hypotheses, seconds = score_generations(
        translate_batch, sources, lambda hyps: corpus_scores(hyps, references, "de"), label="beam 4")
"""

from __future__ import annotations

import ast
import collections
import datetime
import functools
import io
import json
import re
import string
import time
import tokenize
import warnings
from pathlib import Path

import numpy as np
import sacrebleu

_SQUAD_PUNCTUATION = set(string.punctuation)

__all__ = [
    "bleu_tokenizer",
    "caption_scores",
    "caption_tokens",
    "code_bleu",
    "code_tokens",
    "corpus_bleu",
    "corpus_pass_at_k",
    "corpus_chrf",
    "corpus_scores",
    "error_rates",
    "novel_word_share",
    "pass_at_k",
    "squad_scores",
    "repetition_rate",
    "rouge_signature",
    "rouge_scores",
    "score_generations",
    "signatures",
    "syntax_valid_rate",
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


_CAPTION_PUNCTUATION = re.compile(r"[^\w\s'-]+")


_PUNCTUATION = str.maketrans("", "", string.punctuation)


def error_rates(hypotheses, references, groups=None):
    """Speech recognition's ``wer`` and ``cer`` (``jiwer``), overall and ``wer[<group>]`` / ``cer[<group>]`` per group.

    Both sides are lower-cased with punctuation (apostrophes included: "don't"
    = "dont") removed and spaces collapsed. ``groups``: one label per pair
    (a voice, a speaker), or None.
    """
    import jiwer

    hypotheses, references = _check(hypotheses, references)
    clean = lambda texts: [" ".join(t.lower().translate(_PUNCTUATION).split()) for t in texts]  # noqa: E731
    hyps, refs = clean(hypotheses), clean(references)
    scores = {"wer": jiwer.wer(refs, hyps), "cer": jiwer.cer(refs, hyps)}
    if groups is not None:
        if len(groups) != len(refs):
            raise ValueError(f"got {len(groups)} groups for {len(refs)} pairs; pass one group per pair")
        for group in sorted(set(groups)):
            chosen = [i for i, g in enumerate(groups) if g == group]
            scores[f"wer[{group}]"] = jiwer.wer([refs[i] for i in chosen], [hyps[i] for i in chosen])
            scores[f"cer[{group}]"] = jiwer.cer([refs[i] for i in chosen], [hyps[i] for i in chosen])
    return scores


def caption_tokens(caption):
    """A caption as COCO scores it: lower-cased, punctuation (not ``-``/``'`` inside words) removed, words joined by spaces."""
    return " ".join(_CAPTION_PUNCTUATION.sub(" ", caption.lower()).split())


def caption_scores(hypotheses, references):
    """``{"bleu4", "cider"}`` of one caption per image against its reference caption(s) (``pycocoevalcap``).

    ``references`` holds a string or a list of strings per image (COCO has five).
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"caption_scores needs one hypothesis per reference, got {len(hypotheses)} and {len(references)}")
    res = {i: [caption_tokens(h)] for i, h in enumerate(hypotheses)}
    gts = {i: [caption_tokens(r) for r in ([ref] if isinstance(ref, str) else ref)] for i, ref in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu[3]), "cider": float(cider)}


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


def syntax_valid_rate(codes):
    """Share of ``codes`` (list of str) that :func:`ast.parse` accepts.

    The grammar only: a bare body with a ``return`` parses (that error comes
    from the compiler, not the parser), so the score works for whole
    functions and for bodies alike.
    """
    codes = list(codes)
    if not codes:
        raise ValueError("no code to check: pass at least one string")
    valid = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)  # invalid escapes and the like still parse
        for code in codes:
            try:
                ast.parse(code)
            except (SyntaxError, ValueError, RecursionError, MemoryError):  # ValueError: null bytes
                continue
            valid += 1
    return valid / len(codes)


def pass_at_k(n, c, k):
    """The unbiased estimate of pass@k from ``n`` samples of which ``c`` are correct (Chen et al. 2021, eq. 1).

    ``pass@k = 1 - C(n - c, k) / C(n, k)``: the chance that ``k`` samples
    drawn without replacement from the ``n`` include a correct one. Computed
    as ``1 - prod_{i = n - c + 1}^{n} (1 - k / i)`` (the paper's numerically
    stable form; the binomials overflow for n in the hundreds).

    Args:
        n: int >= 1, samples generated for the problem.
        c: int in [0, n], samples that passed.
        k: int in [1, n].
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 1 or not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need n >= 1, 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def corpus_pass_at_k(outcomes, ks=(1,)):
    """``{"pass@k": ...}``: :func:`pass_at_k` averaged over problems, fractions in [0, 1].

    Args:
        outcomes: list with one entry per problem, the list of its samples'
            results as bools (``[r.passed for r in results]``). Problems may have
            different sample counts.
        ks: ints, the k to report. Every problem needs at least ``k`` samples
            (an estimate from fewer would be biased).
    """
    counts = [(len(samples), int(sum(bool(s) for s in samples))) for samples in outcomes]
    if not counts:
        raise ValueError("no problems to score: pass one list of sample results per problem")
    scores = {}
    for k in ks:
        short = next((i for i, (n, _) in enumerate(counts) if n < k), None)
        if short is not None:
            raise ValueError(f"pass@{k} needs at least {k} samples per problem; problem {short} has {counts[short][0]}")
        scores[f"pass@{k}"] = float(np.mean([pass_at_k(n, c, k) for n, c in counts]))
    return scores


_LAYOUT_TOKENS = {tokenize.NEWLINE, tokenize.NL, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER, tokenize.ENCODING}


def code_tokens(code):
    """Python tokens of ``code`` as strings (``"return x+1"`` -> ``["return", "x", "+", "1"]``), layout left out.

    Newlines and indentation are not tokens here. Where :mod:`tokenize`
    gives up (an unclosed bracket or string, a bad dedent: common in
    truncated generations) the tokens read so far are kept and the rest is
    split on whitespace.
    """
    tokens, end = [], (1, 0)
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            if token.type not in _LAYOUT_TOKENS and token.string.strip():
                tokens.append(token.string)
            end = token.end
    except (tokenize.TokenError, SyntaxError):  # IndentationError is a SyntaxError
        lines = code.splitlines(keepends=True)
        row, col = end
        offset = sum(len(line) for line in lines[: row - 1]) + col
        tokens.extend(code[offset:].split())
    return tokens


def code_bleu(hypotheses, references):
    """Corpus BLEU (0-100) over Python tokens (:func:`code_tokens`), one reference each.

    sacrebleu's BLEU with its own tokenizer off (``tokenize="none"``): the
    code is tokenized by Python's :mod:`tokenize` and the tokens joined by
    spaces, so ``x+1`` and ``x + 1`` score the same and ``foo(x)`` is four
    tokens, not one word. Spaces inside string literals and comments still
    split them into words. This is plain BLEU on code tokens, not CodeBLEU
    (Ren et al. 2020, which adds syntax and data-flow matches).
    """
    hypotheses, references = _check(hypotheses, references)
    hypotheses = [" ".join(code_tokens(code)) for code in hypotheses]
    references = [" ".join(code_tokens(code)) for code in references]
    return float(sacrebleu.BLEU(tokenize="none").corpus_score(hypotheses, [references]).score)

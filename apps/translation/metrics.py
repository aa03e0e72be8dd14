"""Corpus BLEU and chrF of detokenized translations, with sacrebleu's defaults (textbook section 10.1).

Both metrics score whole corpora of plain strings, as sacrebleu does for
WMT: ``bleu = BP * exp(sum_n 1/4 log p_n)`` over 1- to 4-grams after
sacrebleu's tokenizer, and chrF (character 6-grams, beta 2). Every argument is
sacrebleu's default except the BLEU tokenizer for Japanese targets, which
have no spaces between words:

* ``"ja-mecab"`` (MeCab with the IPA dictionary, the WMT convention) when the
  ``mecab-python3`` and ``ipadic`` pip packages are installed;
* ``"char"`` (one token per character) otherwise.

:func:`bleu_tokenizer` says which one is in use; :func:`signatures` returns
sacrebleu's signature strings so a report can say exactly what was computed.

Example::

    from apps.translation.metrics import corpus_scores

    corpus_scores(["Die Datei wurde gespeichert."], ["Die Datei wurde gespeichert."], "de")
    # {"bleu": 100.0, "chrf": 100.0}
"""

from __future__ import annotations

import functools

import sacrebleu

__all__ = ["bleu_tokenizer", "corpus_bleu", "corpus_chrf", "corpus_scores", "signatures"]

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


def signatures(language="de"):
    """sacrebleu's signature strings of the two metrics, e.g. ``nrefs:1|case:mixed|eff:no|tok:13a|...``."""
    bleu = _bleu(language)
    chrf = sacrebleu.CHRF()
    for metric in (bleu, chrf):
        metric.corpus_score(["a"], [["a"]])  # sacrebleu knows the reference count only after scoring
    return {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}

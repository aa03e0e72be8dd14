"""Translation metrics: our corpus BLEU / chrF equal direct sacrebleu calls with its defaults."""

import pytest
import sacrebleu

from apps.translation import metrics

HYPOTHESES = [
    "Die Datei konnte nicht geöffnet werden.",
    "Ordner löschen",
    "Das Dokument wird gespeichert ...",
    "Verbindung zum Server",
]
REFERENCES = [
    "Die Datei konnte nicht geöffnet werden.",
    "Den Ordner löschen",
    "Das Dokument wurde gespeichert.",
    "Keine Verbindung zum Server möglich",
]


def test_bleu_and_chrf_equal_sacrebleu_defaults():
    assert metrics.corpus_bleu(HYPOTHESES, REFERENCES, "de") == pytest.approx(
        sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score
    )
    assert metrics.corpus_chrf(HYPOTHESES, REFERENCES) == pytest.approx(
        sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score
    )
    scores = metrics.corpus_scores(HYPOTHESES, REFERENCES, "de")
    assert set(scores) == {"bleu", "chrf"}
    assert 0 < scores["bleu"] < 100 and 0 < scores["chrf"] < 100


def test_identical_corpus_scores_100_and_wrong_one_low():
    scores = metrics.corpus_scores(REFERENCES, REFERENCES, "de")
    assert scores == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    wrong = ["xyz"] * len(REFERENCES)
    assert metrics.corpus_bleu(wrong, REFERENCES) < 1.0


def test_german_uses_13a_and_japanese_mecab_or_char():
    assert metrics.bleu_tokenizer("de") == "13a"
    assert metrics.bleu_tokenizer("ja") in ("ja-mecab", "char")
    assert "tok:13a" in metrics.signatures("de")["bleu"]
    assert "tok:" + metrics.bleu_tokenizer("ja").split("-")[0] in metrics.signatures("ja")["bleu"]


def test_japanese_bleu_equals_sacrebleu_with_the_chosen_tokenizer():
    hypotheses = ["ファイルを開けませんでした。", "フォルダーを削除"]
    references = ["ファイルを開けませんでした。", "フォルダーを削除します"]
    tokenizer = metrics.bleu_tokenizer("ja")
    expected = sacrebleu.corpus_bleu(hypotheses, [references], tokenize=tokenizer).score
    assert metrics.corpus_bleu(hypotheses, references, "ja") == pytest.approx(expected)
    # Without a word tokenizer a Japanese sentence is one "word": BLEU would be meaningless.
    assert metrics.corpus_bleu(hypotheses, references, "ja") > sacrebleu.corpus_bleu(
        hypotheses, [references], tokenize="13a"
    ).score


@pytest.mark.parametrize(
    "hypotheses, references, message",
    [
        (["a"], ["a", "b"], "1 hypotheses for 2 references"),
        ([], [], "no sentences"),
        ([b"bytes"], ["text"], "must be str"),
    ],
)
def test_bad_corpora_raise(hypotheses, references, message):
    with pytest.raises(ValueError, match=message):
        metrics.corpus_scores(hypotheses, references)

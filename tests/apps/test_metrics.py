"""apps/metrics.py: sacrebleu's corpus scores, the repetition rate, the scoring loop and its record."""

import json

import pytest
import sacrebleu

from apps.metrics import (
    bleu_tokenizer,
    corpus_bleu,
    corpus_chrf,
    corpus_scores,
    repetition_rate,
    score_generations,
    signatures,
    write_evaluation,
)

HYPOTHESES = ["Die Datei wurde gespeichert.", "Das Fenster schließen", "Drucker bereit"]
REFERENCES = ["Die Datei wurde gespeichert.", "Fenster schließen", "Der Drucker ist bereit."]


def test_scores_are_sacrebleus():
    assert corpus_bleu(HYPOTHESES, REFERENCES) == pytest.approx(sacrebleu.corpus_bleu(HYPOTHESES, [REFERENCES]).score)
    assert corpus_chrf(HYPOTHESES, REFERENCES) == pytest.approx(sacrebleu.corpus_chrf(HYPOTHESES, [REFERENCES]).score)
    assert corpus_scores(REFERENCES, REFERENCES) == {"bleu": pytest.approx(100.0), "chrf": pytest.approx(100.0)}
    assert bleu_tokenizer("de") == "13a" and bleu_tokenizer("ja") in ("ja-mecab", "char")
    assert signatures("de")["bleu"].startswith("nrefs:1|case:mixed|eff:no|tok:13a")
    with pytest.raises(ValueError, match="must pair up"):
        corpus_bleu(HYPOTHESES, REFERENCES[:2])
    with pytest.raises(ValueError, match="must be str"):
        corpus_bleu([b"bytes"], ["text"])


@pytest.mark.parametrize(
    "texts, rate",
    [
        (["Datei öffnen Datei öffnen Datei öffnen", "Datei speichern"], 0.0),  # 2-grams: not counted (n >= 3)
        (["die Datei ist die Datei ist die Datei ist offen", "ok"], 0.5),
        (["a b c a b c a b c", "a b c a b c", "x"], 1 / 3),  # twice is not a loop
        (["ファイルを開くファイルを開くファイルを開く"], 1.0),  # no spaces: characters
        ([], 0.0),
    ],
)
def test_repetition_rate_counts_outputs_caught_in_a_loop(texts, rate):
    assert repetition_rate(texts) == pytest.approx(rate)


def test_score_generations_times_scores_and_records(tmp_path):
    lines = []
    scores, hypotheses, seconds = score_generations(
        lambda batch: [text.upper() for text in batch], ["a", "b", "c"], lambda h: {"n": len(h)}, "upper", 2,
        log=lines.append,
    )
    assert scores == {"n": 3} and hypotheses == ["A", "B", "C"] and seconds >= 0
    assert lines[0].startswith("upper: 3 test inputs in")
    with pytest.raises(ValueError, match="2 outputs for 3 inputs"):
        score_generations(lambda batch: batch[:1], ["a", "b", "c"], len, "short", 2)
    path = write_evaluation(tmp_path / "run", {"metrics": scores})
    assert json.loads(path.read_text())["metrics"] == {"n": 3} and "finished" in json.loads(path.read_text())


def test_squad_scores_follow_the_official_v1_1_script():
    from apps.metrics import squad_scores

    # Worked by hand with evaluate-v1.1.py's rules: case, punctuation and articles are ignored;
    # F1 is over the normalized tokens; each question takes its best gold answer.
    scores = squad_scores(
        ["The Eiffel Tower!", "development files for libfoo", "a tool", "nothing here"],
        [["eiffel tower"], ["header files for libfoo", "development files"], ["a small tool", "tool"], ["x"]],
    )
    # 1: exact. 2: vs "header files for libfoo": 3 common of 4/4 -> 0.75; vs "development files": P 2/4, R 1 -> 0.667.
    # 3: "tool" exact. 4: nothing.
    assert scores["exact_match"] == pytest.approx(2 / 4)
    assert scores["f1"] == pytest.approx((1 + 0.75 + 1 + 0) / 4)
    with pytest.raises(ValueError, match="one answer per question"):
        squad_scores(["a"], [])
    with pytest.raises(ValueError, match="at least one gold answer"):
        squad_scores(["a"], [[]])

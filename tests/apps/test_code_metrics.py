"""apps/metrics.py, the code metrics: syntax validity, pass@k (Chen et al. 2021) and BLEU on Python tokens."""

import itertools
import math

import pytest
import sacrebleu

from apps.metrics import code_bleu, code_tokens, corpus_pass_at_k, pass_at_k, syntax_valid_rate


def _brute_force_pass_at_k(n, c, k):
    """Every way to draw k of the n samples; the share that holds a correct one."""
    samples = [True] * c + [False] * (n - c)
    draws = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in draw) for draw in draws) / len(draws)


@pytest.mark.parametrize("n", range(1, 8))
def test_pass_at_k_is_the_chance_that_k_draws_hold_a_correct_sample(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)
            assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), abs=1e-12)


def test_pass_at_k_known_values_and_large_n():
    assert pass_at_k(5, 1, 1) == pytest.approx(0.2)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the share correct
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 3, 3) == 1.0  # n - c < k: every draw of 3 holds a correct one
    assert pass_at_k(1000, 7, 100) == pytest.approx(1 - math.comb(993, 100) / math.comb(1000, 100))  # C(1000, 100) ~ 1e139
    for n, c, k in ((5, 6, 1), (5, 1, 0), (5, 1, 6), (0, 0, 1)):
        with pytest.raises(ValueError, match="need n >= 1"):
            pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="must be an int"):
        pass_at_k(5.0, 1, 1)


def test_corpus_pass_at_k_averages_over_problems():
    outcomes = [[True, False, False, False, False], [False] * 5, [True] * 3 + [False] * 2]
    scores = corpus_pass_at_k(outcomes, ks=(1, 5))
    assert scores == {"pass@1": pytest.approx((0.2 + 0.0 + 0.6) / 3), "pass@5": pytest.approx(2 / 3)}
    with pytest.raises(ValueError, match="pass@10 needs at least 10 samples per problem; problem 0 has 5"):
        corpus_pass_at_k(outcomes, ks=(10,))
    with pytest.raises(ValueError, match="no problems"):
        corpus_pass_at_k([])


def test_syntax_valid_rate_parses_with_ast():
    codes = ["def f(x):\n    return x + 1\n", "return x", "def f(:\n", "x = (1,", "a = 1\0"]
    assert syntax_valid_rate(codes) == pytest.approx(2 / 5)  # a bare body with `return` parses
    with pytest.raises(ValueError, match="no code"):
        syntax_valid_rate([])


def test_code_tokens_are_python_tokens_and_survive_broken_code():
    tokens = code_tokens("def f(x):\n    return x+1  # one\n")
    assert tokens == ["def", "f", "(", "x", ")", ":", "return", "x", "+", "1", "# one"]
    assert code_tokens("return (x") == ["return", "(", "x"]  # unclosed bracket: tokens so far
    assert code_tokens('s = """open\nstring') == ["s", "=", '"""open', "string"]  # the rest split on spaces
    assert code_tokens("if x:\n        y\n    z\n") == ["if", "x", ":", "y", "z"]  # bad dedent


def test_code_bleu_is_sacrebleu_on_code_tokens():
    reference = "def add(a, b):\n    return a + b\n"
    assert code_bleu([reference], [reference]) == pytest.approx(100.0)
    assert code_bleu(["def add(a,b):\n  return a+b"], [reference]) == pytest.approx(100.0)  # spacing does not count
    changed = code_bleu(["def add(a, b):\n    return a - b\n"], [reference])
    assert 0.0 < changed < 100.0
    hypotheses, references = ["x = f(1)", "y = g(2)"], ["x = f(2)", "y = g(2)"]
    expected = sacrebleu.BLEU(tokenize="none").corpus_score(
        ["x = f ( 1 )", "y = g ( 2 )"], [["x = f ( 2 )", "y = g ( 2 )"]])
    assert code_bleu(hypotheses, references) == pytest.approx(expected.score)
    with pytest.raises(ValueError, match="must pair up"):
        code_bleu(["a"], ["a", "b"])

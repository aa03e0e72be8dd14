"""pipelines/code_pretraining.py: held-out functions and their near copies never reach the pre-training text."""

import re
import textwrap

import pytest

from pipelines.code_pretraining import HeldOut, build_corpus, held_out_functions, shingles, strip_held_out

HELD = textwrap.dedent('''\
    def running_mean(values, window):
        total = 0.0
        out = []
        for i, value in enumerate(values):
            total += value
            if i >= window:
                total -= values[i - window]
            out.append(total / min(i + 1, window))
        return out
''')

FILE = textwrap.dedent('''\
    """A module that vendors the held-out function three ways."""
    import math


    if math.pi > 3:  # the exact copy, indented one level deeper, with a docstring added
        def running_mean(values, window):
            """Mean of the last `window` values, at each position."""
            total = 0.0
            out = []
            for i, value in enumerate(values):
                total += value
                if i >= window:
                    total -= values[i - window]
                out.append(total / min(i + 1, window))
            return out


    class Stats:
        def keep_me(self):
            return math.pi * 2


    def moving_average(xs, w):
        # renamed and commented: a near copy
        acc = 0.0
        res = []
        for i, x in enumerate(xs):
            acc += x
            if i >= w:
                acc -= xs[i - w]
            res.append(acc / min(i + 1, w))
        return res


    def unrelated(a, b):
        """Add two numbers, then square them."""
        s = a + b
        return s * s


    def documented_like_the_test(x):
        """Return the mean of the last values at each position of the list."""
        return sorted(x)
''')


@pytest.fixture
def held_out():
    return HeldOut([HELD], {"Return the mean of the last values at each position of the list."})


def test_exact_near_and_docstring_copies_are_removed_and_the_rest_kept(held_out):
    text, reasons = strip_held_out(FILE, held_out)
    assert reasons == {"exact": 1, "near": 1, "docstring": 1}
    assert "running_mean" not in text and "moving_average" not in text and "documented_like_the_test" not in text
    assert "def keep_me(self):" in text and "def unrelated(a, b):" in text and "import math" in text
    compile(text, "<corpus>", "exec")  # what is left is still Python


def test_unrelated_code_is_not_a_near_copy(held_out):
    other = "def f(items):\n    return [item for item in items if item]\n"
    assert held_out.match(other) is None
    similar = HELD.replace("min(i + 1, window)", "window")  # one edit: still a near copy
    assert held_out.match(similar) == "near"
    # Jaccard of shingles: the same code gives 1, disjoint code 0.
    assert shingles(HELD) == shingles(HELD.replace("    ", "\t"))


def test_a_file_that_does_not_parse_is_not_used(held_out):
    assert strip_held_out("def broken(:\n", held_out) == (None, {})


def test_build_corpus_records_licences_and_counts(tmp_path, held_out):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text(FILE)
    (tmp_path / "pkg" / "bad.py").write_text("def broken(:\n")
    (tmp_path / "pkg" / "test_mod.py").write_text("def test_x():\n    assert True\n")  # tests are left out
    corpus = build_corpus(held_out, roots=[(tmp_path, "MIT")])
    assert len(corpus.documents) == 1 and corpus.skipped_files == 1
    assert corpus.removed == {"exact": 1, "near": 1, "docstring": 1}
    assert corpus.licences == {"MIT": {"python-stdlib": len(corpus.documents[0].encode())}}
    saved = corpus.save(tmp_path / "out")
    assert (saved / "corpus.jsonl").is_file() and '"removed_functions"' in (saved / "MANIFEST.json").read_text()


def _normalized(text):
    return re.sub(r"\s+", " ", text)


def test_the_stdlib_corpus_holds_no_validation_or_test_function():
    """On the real corpus: no held-out body of 200 characters or more (whitespace collapsed) is in the stdlib text."""
    try:
        held_out = held_out_functions()
    except Exception as error:  # the corpus is not built in this tree
        pytest.skip(f"tfsuite_code not built: {error}")
    corpus = build_corpus(held_out, include_site_packages=False)
    assert corpus.removed["exact"] >= len(held_out.codes) * 0.9  # they were there: the stdlib is their source
    text = _normalized("\n".join(corpus.documents))
    checked = 0
    for code in held_out.codes:
        body = [line.strip() for line in code.splitlines()[1:] if line.strip() and not line.strip().startswith("#")]
        if len(" ".join(body)) < 200:  # a short body can be a statement other functions share
            continue
        checked += 1
        assert _normalized(" ".join(body)) not in text, code
    assert checked > 150

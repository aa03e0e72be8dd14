"""code_tools/retrieval.py: BM25 over training docstrings returns the nearest one's code."""

import numpy as np
import pytest
import tensorflow as tf
from rank_bm25 import BM25Okapi

from code_tools.retrieval import CodeRetriever, docstring_tokens
from pipelines.corpora.code import collect_functions

SOURCES = {
    "text.py": '''
def dedent(text):
    """Remove any common leading whitespace from every line in text."""
    lines = text.splitlines()
    return "\\n".join(line.strip() for line in lines)


def shorten(text, width):
    """Collapse and truncate the given text to fit in the given width."""
    text = " ".join(text.split())
    return text[:width]
''',
    "numbers.py": '''
def mean(data):
    """Return the sample arithmetic mean of data, a sequence of numbers."""
    data = list(data)
    return sum(data) / len(data)


def clamp(value, low, high):
    """Clamp a number between a low and a high bound."""
    value = max(low, value)
    return min(high, value)


class Stack:
    def push(self, item):
        """Push an item on top of the stack of items."""
        self.items.append(item)
        return item
''',
}


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    for name, source in SOURCES.items():
        (root / name).write_text(source)
    return collect_functions(root)


def test_the_exact_docstring_retrieves_its_own_function_first(examples):
    retriever = CodeRetriever.from_examples(examples)
    docstrings = [e["docstring"] for e in examples]
    assert retriever.retrieve(docstrings) == [e["code"] for e in examples]
    assert (retriever.nearest(docstrings)[:, 0] == np.arange(len(examples))).all()
    by_name = {e["qualified_name"]: e for e in examples}
    # A paraphrase finds the right one by its content words.
    assert retriever.retrieve(["the arithmetic mean of some numbers"]) == [by_name["numbers.mean"]["code"]]
    assert retriever.retrieve(["push onto the stack"]) == [by_name["numbers.Stack.push"]["code"]]


def test_target_picks_code_or_body(examples):
    bodies = CodeRetriever.from_examples(examples, target="body").retrieve(["Clamp a number between bounds"])
    clamp = next(e for e in examples if e["qualified_name"] == "numbers.clamp")
    assert bodies == [clamp["body"]] and not bodies[0].startswith("def")
    with pytest.raises(ValueError, match="target must be one of"):
        CodeRetriever.from_examples(examples, target="docstring")


def test_scores_are_rank_bm25s_computed_at_once():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    docstrings = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(60)]
    queries = [" ".join(rng.choice(words + ["unseen"], size=rng.integers(1, 8))) for _ in range(25)]
    queries.append("w1 w1 w1 w2")  # a repeated query term counts each time, as in get_scores
    retriever = CodeRetriever(docstrings, [f"code {i}" for i in range(60)])
    reference = BM25Okapi([docstring_tokens(d) for d in docstrings])
    expected = np.stack([reference.get_scores(docstring_tokens(q)) for q in queries])
    np.testing.assert_allclose(retriever.scores(queries), expected, rtol=1e-12, atol=1e-12)
    top = retriever.nearest(queries, k=3, batch_size=7)  # several batches
    assert top.shape == (len(queries), 3)
    np.testing.assert_allclose(np.take_along_axis(expected, top, 1), -np.sort(-expected, axis=1)[:, :3])
    assert (retriever.nearest(queries, batch_size=7)[:, 0] == top[:, 0]).all()


def test_ties_and_unknown_words_go_to_the_earliest_example():
    # Enough other documents that "read" and "file" are rare (with most documents sharing a word,
    # rank_bm25's idf floor goes negative and such tiny corpora rank oddly).
    others = [f"other topic {i}" for i in range(8)]
    retriever = CodeRetriever(others[:4] + ["read a file", "read a file"] + others[4:],
                              ["x"] * 4 + ["first", "second"] + ["y"] * 4)
    assert retriever.retrieve(["read file"]) == ["first"]
    assert retriever.nearest(["nothing known here"])[0, 0] == 0


def test_bad_inputs_say_what_to_pass():
    with pytest.raises(ValueError, match="must pair up"):
        CodeRetriever(["a b"], [])
    with pytest.raises(ValueError, match="no training docstrings"):
        CodeRetriever([], [])
    with pytest.raises(ValueError, match="no words"):
        CodeRetriever(["...", "!"], ["x", "y"])
    retriever = CodeRetriever(["read a file"], ["x"])
    with pytest.raises(TypeError, match="wrap it in a list"):
        retriever.retrieve("read a file")
    with pytest.raises(ValueError, match="k must be in"):
        retriever.nearest(["read"], k=2)


def test_the_graph_retriever_picks_what_the_python_one_picks():
    from code_tools.retrieval import GraphRetriever

    rng = np.random.default_rng(1)
    words = [f"w{i}" for i in range(50)]
    docstrings = [" ".join(rng.choice(words, size=rng.integers(1, 15))) for _ in range(80)]
    docstrings[7] = docstrings[3]  # a tie: the earlier one wins in both
    queries = [" ".join(rng.choice(words + ["unseen"], size=rng.integers(1, 8))) for _ in range(40)]
    queries += [docstrings[3], "Nothing KNOWN; here!", "", "W1, w2... (W3)", "\xe9t\xe9 w4"]
    retriever = CodeRetriever(docstrings, [f"code {i}" for i in range(80)])
    graph = GraphRetriever(retriever)
    expected = retriever.nearest(queries)[:, 0]
    np.testing.assert_array_equal(graph.nearest(tf.constant(queries)).numpy(), expected)
    assert expected[-5] == 3 and expected[-4] == 0 and expected[-3] == 0
    assert [v.decode() for v in graph(tf.constant(queries[:3])).numpy()] == retriever.retrieve(queries[:3])
    served = tf.function(graph.__call__, input_signature=[tf.TensorSpec([None], tf.string)])
    assert served(tf.constant([b"w1 \xff\xfe w2"])).shape == (1,)  # bytes that are not UTF-8 still get an answer
    with pytest.raises(ValueError, match="values for 80"):
        GraphRetriever(retriever, values=["x"])


def test_retrieval_prompts_put_the_nearest_example_first_when_both_fit_in_python_and_in_the_graph():
    from code_tools.retrieval import RetrievalPrompts

    keys = ["sort a list of numbers", "read a text file", "open a network socket", "parse a date string"]
    examples = [f"EXAMPLE {i}\n" for i in range(4)]
    composer = RetrievalPrompts(keys, examples, max_bytes=40)
    prompts = ["read the whole file", "parse an ISO date", "   ", "x" * 35, "sort these numbers"]
    expected = ["EXAMPLE 1\nread the whole file", "EXAMPLE 3\nparse an ISO date", "   ", "x" * 35,
                "EXAMPLE 0\nsort these numbers"]
    assert composer.compose(prompts) == expected  # blank and too long prompts stay as they are
    assert [t.decode() for t in composer(tf.constant(prompts)).numpy()] == expected
    # A training row never sees its own example: the second best instead.
    assert composer.compose(["sort a list of numbers"], exclude=[0])[0] != "EXAMPLE 0\nsort a list of numbers"
    assert composer.compose(["sort a list of numbers"], exclude=[2]) == ["EXAMPLE 0\nsort a list of numbers"]

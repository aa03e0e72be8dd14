import ast
import textwrap

import pytest

import pipelines.corpora.code  # noqa: F401  (registers tfsuite_code)
from pipelines.corpora import python_stdlib
from pipelines.corpora.splits import assign_split
from tests.pipelines.corpora_testdata import load_all, prepare, text

MOD_A = '''
def add(a, b):
    """Return the sum of a and b."""
    # a comment stays with the body
    return a + b


def trivial():
    """Do nothing at all here."""
    pass


def short_doc():
    """Hi."""
    return 1 + 1


class Box:
    @property
    def size(self):
        """Return the number of items."""
        return len(self.items)

    def outer(self):
        """Outer function with a nested helper."""
        def inner():
            """Nested helpers are not extracted."""
            return 2
        return inner()
'''
COPY = '''
def add(a, b):
    """Add two numbers together (same code as mod_a.add)."""
    # a comment stays with the body
    return a + b
'''
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("stdlib")
    (root / "mod_a.py").write_text(MOD_A)
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text(COPY)
    generated = "".join(
        f'def scale_{a}_{b}(x):\n    """Multiply x by {a} and add {b}."""\n    return x * {WORDS.index(a) + 1} + {WORDS.index(b) + 1}\n\n\n'
        for a in WORDS for b in WORDS
    )  # fmt: skip
    (root / "gen.py").write_text(generated)
    for excluded in ("test_mod.py", "tests/helper.py", "idlelib/editor.py", "test/support.py"):
        (root / excluded).parent.mkdir(parents=True, exist_ok=True)
        (root / excluded).write_text('def skipped(x):\n    """This file must be skipped."""\n    return x\n')
    (root / "broken.py").write_text("def broken(:\n")
    return root


def test_extract_keeps_documented_functions_without_docstrings_in_code(tree):
    found = {f.qualified_name: f for f in python_stdlib.functions(tree)}
    assert "mod_a.add" in found and "mod_a.Box.size" in found and "mod_a.Box.outer" in found and "pkg.add" in found
    assert "mod_a.short_doc" in found  # the reader keeps it; tfsuite_code drops 1-word docstrings
    assert "mod_a.trivial" not in found  # `pass` bodies are trivial
    assert not any("skipped" in name or "inner" in name or "broken" in name for name in found)
    add = found["mod_a.add"]
    assert add.docstring == "Return the sum of a and b."
    assert add.signature == "def add(a, b):"
    assert add.body == "# a comment stays with the body\nreturn a + b"
    assert add.code == "def add(a, b):\n    # a comment stays with the body\n    return a + b"
    assert found["mod_a.Box.size"].signature == "@property\ndef size(self):"
    for function in found.values():
        ast.parse(function.code)  # dedented code is valid Python on its own
        assert function.docstring not in function.code


def test_real_stdlib_function():
    source = (python_stdlib.stdlib_dir() / "textwrap.py").read_text()
    [dedent] = [f for f in python_stdlib.extract(source, "textwrap") if f.qualified_name == "textwrap.dedent"]
    assert dedent.docstring.startswith("Remove any common leading whitespace")
    assert dedent.code.startswith("def dedent(text):\n")
    namespace = {}
    exec(compile(textwrap.dedent(source.split("def dedent")[0]) + dedent.code, "textwrap_copy", "exec"), namespace)
    assert namespace["dedent"]("  a\n  b\n") == "a\nb\n"  # the extracted code still works


@pytest.fixture(scope="module")
def data(tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("code-tfds")
    prepare("tfsuite_code", root, source_root=tree)
    return load_all("tfsuite_code", root)


def test_dataset_filters_dedups_and_splits_by_qualified_name(data):
    examples = [ex for split in data.values() for ex in split]
    assert set(examples[0]) == {"qualified_name", "path", "docstring", "signature", "body", "code", "source_item"}
    names = [text(ex["qualified_name"]) for ex in examples]
    # 100 generated + add + Box.size + Box.outer; short_doc (1-word docstring) and pkg.add (same code) dropped.
    assert sorted(n for n in names if not n.startswith("gen.")) == ["mod_a.Box.outer", "mod_a.Box.size", "mod_a.add"]
    assert len(names) == 103 and len(set(names)) == 103
    assert all(data[split] for split in data)
    for split, exs in data.items():
        for ex in exs:
            assert text(ex["source_item"]) == text(ex["qualified_name"])
            assert assign_split(text(ex["qualified_name"])) == split

"""Functions with docstrings from the Python standard library on disk.

Source reader for ``tfsuite_code`` (docstring to function). The stdlib of the
running interpreter (``sysconfig.get_paths()["stdlib"]``, PSF licence) is
parsed with :mod:`ast`; tests (``test/``, ``tests/``, ``test_*.py``),
``idlelib``, ``site-packages`` and bundled wheels are skipped.
:func:`source_files` also lists installed site-packages for causal-LM
pretraining text.

A :class:`Function` holds the docstring and the code without it, both
dedented: ``signature`` is the ``def`` line(s), ``body`` the statements after
the docstring, ``code`` the two joined (what a model must generate).

Example::

    from pipelines.corpora import python_stdlib

    functions = list(python_stdlib.functions())
    f = next(f for f in functions if f.qualified_name == "textwrap.dedent")
    print(f.docstring.splitlines()[0]); print(f.code)
"""

from __future__ import annotations

import ast
import dataclasses
import sysconfig
import textwrap
import warnings
from pathlib import Path

__all__ = ["Function", "stdlib_dir", "source_files", "module_name", "extract", "functions"]

_SKIPPED_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__", "_bundled", "idle_test"}


@dataclasses.dataclass(frozen=True)
class Function:
    """One function or method with a docstring.

    Attributes:
        qualified_name: str, ``module.Class.method``.
        path: str, the file relative to the stdlib root.
        lineno: int, line of the ``def``.
        docstring: str, cleaned with :func:`inspect.cleandoc` (``ast.get_docstring``).
        signature: str, the decorators and ``def ...:`` line(s), dedented.
        body: str, the statements after the docstring, dedented to column 0.
        code: str, ``signature`` followed by the body indented by four spaces.
    """

    qualified_name: str
    path: str
    lineno: int
    docstring: str
    signature: str
    body: str
    code: str


def stdlib_dir():
    """The running interpreter's standard-library folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def source_files(root=None, include_site_packages=False):
    """Sorted ``*.py`` files under ``root`` (default the stdlib), tests and idlelib left out."""
    root = Path(root or stdlib_dir())
    skipped = set(_SKIPPED_DIRS)
    if include_site_packages:
        skipped -= {"site-packages", "dist-packages"}
    out = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(part in skipped for part in parts[:-1]) or parts[-1].startswith("test_"):
            continue
        out.append(path)
    return out


def module_name(path, root):
    """``email/mime/text.py`` -> ``email.mime.text``; ``json/__init__.py`` -> ``json``."""
    parts = list(Path(path).relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_trivial(statements):
    """True for bodies that only pass, raise NotImplementedError or return a constant."""
    if len(statements) != 1:
        return False
    node = statements[0]
    if isinstance(node, ast.Pass) or (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)):
        return True
    if isinstance(node, ast.Raise) and node.exc is not None:
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"
    return isinstance(node, ast.Return) and (node.value is None or isinstance(node.value, ast.Constant))


def extract(source, module, path=""):
    """Yield a :class:`Function` for every documented, non-trivial function or method in ``source``.

    Module-level functions and methods of (nested) classes are kept; functions
    nested inside functions are not (their meaning depends on the enclosing scope).
    """
    tree = ast.parse(source)
    lines = source.splitlines()

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                function = _function(child, prefix)
                if function is not None:
                    yield function

    def _function(node, prefix):
        docstring = ast.get_docstring(node, clean=True)
        if not docstring or len(node.body) < 2 or _is_trivial(node.body[1:]):
            return None
        doc_node = node.body[0]
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        if doc_node.lineno <= node.lineno:  # `def f(): "doc"; ...` on one line
            return None
        signature = textwrap.dedent("\n".join(lines[first - 1 : doc_node.lineno - 1])).rstrip()
        body_start = node.body[1].lineno
        # Comments between the docstring and the first statement belong to the body.
        while body_start - 1 > doc_node.end_lineno and lines[body_start - 2].strip():
            body_start -= 1
        body = textwrap.dedent("\n".join(lines[body_start - 1 : node.end_lineno])).strip("\n")
        code = signature + "\n" + textwrap.indent(body, "    ")
        return Function(f"{module}.{prefix}{node.name}", path, node.lineno, docstring, signature, body, code)

    yield from visit(tree, "")


def functions(root=None):
    """Yield :class:`Function` records from every stdlib source file (see :func:`source_files`)."""
    root = Path(root or stdlib_dir())
    for path in source_files(root):
        try:
            source = path.read_text(encoding="utf-8")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                found = list(extract(source, module_name(path, root), str(path.relative_to(root))))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # lib2to3 fixtures and the like are not valid Python 3
        yield from found

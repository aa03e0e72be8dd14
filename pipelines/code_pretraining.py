"""Python source on this machine as GPT pre-training text, with the code app's held-out functions removed.

Pre-training (textbook 6.2) reads the standard library and the installed
site-packages: real Python, a few hundred MB of it, under recorded licences.
``tfsuite_code`` is built from the same standard library, so every function of
its validation and test splits is also in that text, and many are vendored or
copied elsewhere (``_pydecimal``, ``pip/_vendor``, backports). A model that
saw them while pre-training would be graded on memory, not generation.
:func:`build_corpus` therefore removes, from every file, each function or
method that is

* the same code as a held-out function once whitespace and the docstring are
  ignored (``exact``),
* a near copy: Jaccard similarity of 5-token shingles (Python tokens,
  decorators, whitespace and comments dropped) at least ``threshold``
  (default 0.7; ``near``), once with the names kept and, for held-out
  functions of 15 shingles or more, once with every name replaced by one
  placeholder (renamed variables; shorter abstracted shapes, such as
  ``return self._x.get(key)``, match thousands of unrelated functions); this
  catches reformatting, edited comments and small edits; also a function
  at most 3 times as long that holds 90% of a held-out function's shingles
  (the held-out one with lines added), or
* documented by the same docstring as a held-out function (``docstring``),

and keeps the rest of the file. The near-copy test uses an inverted index of
the held-out shingles, so it costs one lookup per shingle of the corpus.

Licences: each site-packages file is attributed to its installed distribution
(``importlib.metadata``: its ``License-Expression``, ``License`` field or
licence classifiers); the stdlib is ``PSF-2.0``. The manifest lists them per
distribution with the bytes used; files of no known distribution, or of one
that declares no licence, are left out.

Example::

    from pipelines.code_pretraining import build_corpus, held_out_functions

    held_out = held_out_functions()                        # tfsuite_code validation + test
    corpus = build_corpus(held_out, max_bytes=50_000_000)  # stdlib, then site-packages
    corpus.documents[0][:80], corpus.removed, corpus.licences["PSF-2.0"]
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib.metadata
import io
import json
import keyword
import sysconfig
import textwrap
import tokenize
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from pipelines.corpora import python_stdlib

__all__ = ["CodeCorpus", "HeldOut", "build_corpus", "held_out_functions", "shingles", "site_packages_dirs"]

SHINGLE = 5
STDLIB_LICENCE = "PSF-2.0"
# Packages left out of the text: ours, and generated or data-like code that teaches nothing.
SKIPPED_DISTRIBUTIONS = {"tfsuite"}
MAX_FILE_BYTES = 400_000
# A function that holds this share of a held-out function's shingles, and is at most
# CONTAINER_RATIO times its size, is a near copy too (the held-out one with lines added).
CONTAINMENT, CONTAINER_RATIO = 0.9, 3.0
ABSTRACT_MIN_SHINGLES = 15


def _code_tokens(source, abstract_names=False, drop_decorators=False):
    """Python tokens of ``source`` without comments, newlines and indentation; a crude split if it does not tokenize.

    With ``drop_decorators``, leading decorator lines are left out; with
    ``abstract_names``, every name that is not a keyword becomes ``"N"`` (for
    the near-copy test: renaming does not hide a copy).
    """
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    if drop_decorators:
        lines = textwrap.dedent(source).splitlines()
        while lines and lines[0].lstrip().startswith("@"):
            lines.pop(0)
        source = textwrap.dedent("\n".join(lines))
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type not in skip]
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source.split()
    if abstract_names:
        return ["N" if t.type == tokenize.NAME and not keyword.iskeyword(t.string) else t.string for t in tokens]
    return [t.string for t in tokens]


def shingles(code, size=SHINGLE, abstract_names=True):
    """The set of ``size``-token windows of ``code`` (names abstracted by default, hashed to ints); one window
    for shorter code."""
    tokens = _code_tokens(code, abstract_names=abstract_names, drop_decorators=True)
    windows = [tuple(tokens[i : i + size]) for i in range(max(len(tokens) - size + 1, 1))]
    return {int.from_bytes(hashlib.blake2b("\x00".join(w).encode(), digest_size=8).digest(), "little")
            for w in windows}


def _without_docstring(node, lines):
    """The function's source lines with its docstring statement cut out, as one string."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
            and isinstance(body[0].value.value, str):
        doc = body[0]
        kept = lines[first - 1 : doc.lineno - 1] + lines[doc.end_lineno : node.end_lineno]
    else:
        kept = lines[first - 1 : node.end_lineno]
    return "\n".join(kept)


def _exact_key(code):
    return " ".join(_code_tokens(code))


@dataclasses.dataclass
class HeldOut:
    """The functions pre-training must not see: exact keys, docstrings and a shingle index."""

    codes: list
    docstrings: set
    threshold: float = 0.7

    def __post_init__(self):
        self.exact = {_exact_key(code) for code in self.codes}
        # Two shingle indexes: names kept (every function) and names abstracted (functions of at
        # least ABSTRACT_MIN_SHINGLES: shorter abstracted shapes match too many unrelated functions).
        self.indexes = {}
        for abstract in (False, True):
            sizes, index = [], defaultdict(list)
            for i, code in enumerate(self.codes):
                grams = shingles(code, abstract_names=abstract)
                sizes.append(len(grams))
                if not abstract or len(grams) >= ABSTRACT_MIN_SHINGLES:
                    for gram in grams:
                        index[gram].append(i)
            self.indexes[abstract] = (sizes, index)

    def match(self, code, docstring=None):
        """Why ``code`` (a function without its docstring) is held out: ``"exact"``, ``"near"``, ``"docstring"`` or None."""
        if _exact_key(code) in self.exact:
            return "exact"
        if docstring and docstring.strip() in self.docstrings:
            return "docstring"
        for abstract, (sizes, index) in self.indexes.items():
            grams = shingles(code, abstract_names=abstract)
            shared = Counter(i for gram in grams for i in index.get(gram, ()))
            for i, common in shared.items():
                jaccard = common / (len(grams) + sizes[i] - common)
                contained = common / sizes[i] >= CONTAINMENT and len(grams) <= CONTAINER_RATIO * sizes[i]
                if jaccard >= self.threshold or contained:
                    return "near"
        return None


def held_out_functions(splits=("validation", "test"), data_dir=None, threshold=0.7):
    """:class:`HeldOut` of ``tfsuite_code``'s ``splits`` (the built corpus, ``tfsuite data build tfsuite_code``)."""
    from pipelines import tfds_sources

    codes, docstrings = [], set()
    for split in splits:
        columns = tfds_sources.load_columns("code", split=split, data_dir=data_dir,
                                            fields={"prompt": "docstring", "code": "code"})
        codes += columns["code"]
        docstrings |= {d.strip() for d in columns["prompt"] if len(d.split()) >= 3}
    return HeldOut(codes, docstrings, threshold)


def strip_held_out(source, held_out):
    """``source`` with every held-out function or method removed, and the reasons counted.

    Returns ``(text, Counter)``; ``text`` is None when the file does not parse
    (it cannot be checked, so it is not used).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None, Counter()
    lines = source.splitlines()
    cut, reasons = [], Counter()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            reason = held_out.match(_without_docstring(node, lines), ast.get_docstring(node, clean=True))
            if reason:
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                cut.append((first, node.end_lineno))
                reasons[reason] += 1
    if not cut:
        return source, reasons
    removed, starts = set(), {}
    for first, last in cut:  # a nested match inside a removed function is covered by it
        removed.update(range(first - 1, last))
        starts[first - 1] = lines[first - 1][: len(lines[first - 1]) - len(lines[first - 1].lstrip())]
    text = "\n".join(line for i, line in enumerate(lines) if i not in removed) + "\n"
    try:
        compile(text, "<corpus>", "exec", flags=ast.PyCF_ONLY_AST)
    except SyntaxError:  # a block lost its only statement: a `pass` holds its place
        text = "\n".join(starts[i] + "pass" if i in starts else line for i, line in enumerate(lines)
                         if i not in removed or i in starts) + "\n"
    return text, reasons


def site_packages_dirs():
    """The installed site-packages folders (purelib and platlib of the running interpreter)."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def _licence(distribution):
    meta = distribution.metadata
    expression = meta.get("License-Expression")
    if expression:
        return expression.strip()
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return " / ".join(sorted(set(classifiers)))
    text = (meta.get("License") or "").strip()
    return text.splitlines()[0][:80] if text and text.upper() != "UNKNOWN" else "unknown"


def _distribution_files():
    """``{absolute path: (distribution name, licence)}`` of the installed distributions' Python files."""
    owners = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata.get("Name") or "?"
        if name.lower() in SKIPPED_DISTRIBUTIONS:
            continue
        licence = _licence(distribution)
        for file in distribution.files or ():
            if str(file).endswith(".py"):
                owners[Path(distribution.locate_file(file)).resolve()] = (name, licence)
    return owners


@dataclasses.dataclass
class CodeCorpus:
    """Pre-training documents (one per source file) and what was removed from them.

    Attributes:
        documents: list of str, file texts after removal.
        paths: list of str, where each document came from.
        removed: Counter of removal reasons (``exact``, ``near``, ``docstring``).
        licences: dict licence -> {distribution: bytes used}.
        skipped_files: int, files that did not parse or had no known distribution.
    """

    documents: list
    paths: list
    removed: Counter
    licences: dict
    skipped_files: int = 0

    def manifest(self):
        return {"documents": len(self.documents), "bytes": sum(len(d.encode()) for d in self.documents),
                "removed_functions": dict(self.removed), "skipped_files": self.skipped_files,
                "licences": self.licences}

    def save(self, folder):
        """``corpus.jsonl`` (path, text) and ``MANIFEST.json`` (counts and licences) under ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
            for path, text in zip(self.paths, self.documents):
                f.write(json.dumps({"path": path, "text": text}, ensure_ascii=False) + "\n")
        (folder / "MANIFEST.json").write_text(json.dumps(self.manifest(), indent=1), encoding="utf-8")
        return folder


def build_corpus(held_out, roots=None, max_bytes=None, include_site_packages=True):
    """Read Python files (the stdlib first, then site-packages) into a :class:`CodeCorpus` without ``held_out``.

    Args:
        held_out: :class:`HeldOut`, the functions to remove (:func:`held_out_functions`).
        roots: list of ``(folder, licence or None)``; None reads the stdlib (``PSF-2.0``) and, with
            ``include_site_packages``, every site-packages folder (licence from each file's distribution).
        max_bytes: int or None, stop after this many bytes of text.
    """
    if roots is None:
        roots = [(python_stdlib.stdlib_dir(), STDLIB_LICENCE)]
        if include_site_packages:
            roots += [(folder, None) for folder in site_packages_dirs()]
    owners = None
    documents, paths, removed, licences, skipped, total = [], [], Counter(), defaultdict(dict), 0, 0
    seen = set()
    for root, licence in roots:
        root = Path(root)
        files = python_stdlib.source_files(root, include_site_packages=licence is None)
        for path in files:
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            if licence is None:
                owners = _distribution_files() if owners is None else owners
                if resolved not in owners:
                    skipped += 1
                    continue
                owner, file_licence = owners[resolved]
                if file_licence == "unknown":  # no licence we could record: not used
                    skipped += 1
                    continue
            else:
                owner, file_licence = "python-stdlib", licence
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                source = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                skipped += 1
                continue
            text, reasons = strip_held_out(source, held_out)
            if text is None:
                skipped += 1
                continue
            removed.update(reasons)
            size = len(text.encode())
            documents.append(text)
            paths.append(str(path))
            licences[file_licence][owner] = licences[file_licence].get(owner, 0) + size
            total += size
            if max_bytes is not None and total >= max_bytes:
                return CodeCorpus(documents, paths, removed, dict(licences), skipped)
    return CodeCorpus(documents, paths, removed, dict(licences), skipped)

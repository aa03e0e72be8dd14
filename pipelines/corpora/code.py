"""``tfsuite_code``: docstring to function, from the Python standard library.

TFDS dataset builder for the code-generation app (textbook 6.2 GPT and
chapter 10). Source: :mod:`pipelines.corpora.python_stdlib`, the documented,
non-trivial functions and methods of the interpreter's standard library
(tests and idlelib excluded, PSF licence). The input is the docstring (and,
for prompting, the signature); the target is the function without its
docstring.

Filters: docstring of at least 3 words, function of at most 120 lines.
Deduplicated by the code with whitespace collapsed (copies such as
``_pydecimal`` versus vendored helpers keep one). Split by the function's
qualified name, 90/5/5, so a method never appears in two splits.

Features::

    qualified_name  Text   "textwrap.dedent", "email.message.Message.get"
    path            Text   file relative to the stdlib root
    docstring       Text   cleaned docstring
    signature       Text   decorators and def line(s)
    body            Text   statements after the docstring, dedented
    code            Text   signature + body (the generation target)
    source_item     Text   the split key (= qualified_name)

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.code  # registers the builder

    ds = tfds.load("tfsuite_code", split="train", data_dir="data/tfds", as_supervised=True)
"""

from __future__ import annotations

import logging
import sys

import tensorflow_datasets as tfds

from pipelines.corpora import python_stdlib
from pipelines.corpora.splits import SPLITS, Deduplicator, assign_split

__all__ = ["TfsuiteCode", "collect_functions", "MIN_DOCSTRING_WORDS", "MAX_CODE_LINES"]

log = logging.getLogger(__name__)

MIN_DOCSTRING_WORDS = 3
MAX_CODE_LINES = 120


def collect_functions(root=None):
    """Return the filtered, deduplicated functions as feature dicts with a ``split`` key.

    Args:
        root: str or Path or None, a folder of Python sources; default the stdlib.
    """
    dedup = Deduplicator(key_fn=lambda code: " ".join(code.split()))
    out = []
    for function in python_stdlib.functions(root):
        if len(function.docstring.split()) < MIN_DOCSTRING_WORDS or len(function.code.splitlines()) > MAX_CODE_LINES:
            continue
        if not dedup.add(function.code):
            continue
        example = {field: getattr(function, field) for field in ("qualified_name", "path", "docstring", "signature", "body", "code")}
        example["source_item"] = function.qualified_name
        example["split"] = assign_split(function.qualified_name)
        example["key"] = f"{function.qualified_name}:{function.lineno}"
        out.append(example)
    log.info("code: %d functions, %d duplicates dropped", len(out), dedup.dropped)
    return out


class TfsuiteCode(tfds.core.GeneratorBasedBuilder):
    """Docstring to function from the Python standard library."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": f"Python {sys.version_info.major}.{sys.version_info.minor} standard library."}

    def __init__(self, *, source_root=None, **kwargs):
        """``source_root``: folder of Python sources (default the stdlib); the rest goes to TFDS."""
        self._source_root = source_root
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Features::")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    name: tfds.features.Text()
                    for name in ("qualified_name", "path", "docstring", "signature", "body", "code", "source_item")
                }
            ),
            supervised_keys=("docstring", "code"),
            homepage="https://docs.python.org/3/library/",
            license="PSF-2.0 (Python standard library)",
        )

    def _split_generators(self, dl_manager):
        functions = collect_functions(self._source_root)
        return {split: self._generate_examples([f for f in functions if f["split"] == split]) for split in SPLITS}

    def _generate_examples(self, functions):
        for function in functions:
            yield function["key"], {key: value for key, value in function.items() if key not in ("split", "key")}

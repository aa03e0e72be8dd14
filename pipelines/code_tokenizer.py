"""A SentencePiece BPE tokenizer for Python source, for GPT pre-training on code (textbook 6.2) and the code app.

Code's whitespace is meaning, so the model keeps every character as it is:
``model_type="bpe"``, no normalization, no whitespace collapsing, pieces may
span spaces and newlines (``"\\n▁▁▁▁▁▁▁▁"`` is one piece: a line break and
its indentation), no dummy space in front of a text, digits split one per
piece, and byte fallback: a character the model has no piece for is spelled
as its UTF-8 bytes (``<0xF0>``...), so nothing becomes ``[UNK]``.

Round trip: ``detokenize(tokenize(text)) == text`` for every Python ``str``
(tabs, CRLF, trailing spaces, leading spaces, NUL, emoji, any script), and
detokenizing is piece-wise: ``detokenize(ids(a) + ids(b)) == a + b``, so a
prompt's ids followed by generated ids decode to the prompt followed by the
continuation (cut a continuation only between characters: half of a
character's byte pieces do not decode).

One character needs care: SentencePiece writes spaces as ``"▁"`` (U+2581) and
turns every ``"▁"`` back into a space when decoding, so a literal U+2581 (it
occurs in real code: ``rich``'s spinner tables) would come back as a space.
The model's normalizer escapes it, ``U+2581 -> U+E000 U+E001`` and
``U+E000 -> U+E000 U+E000``, and its denormalizer undoes both (longest match,
left to right, so the pair code is prefix-free and exact); both live in the
model proto, so the tensorflow-text ops apply them in-graph.

Ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[START]`` 2, ``[END]`` 3, ``[MASK]`` 4, then
the 256 byte pieces, as in :mod:`pipelines.sentencepiece`. (The literal
text ``"[MASK]"`` tokenizes to id 4 and decodes back to ``"[MASK]"``.)

Serving (measured with tensorflow 2.21, tensorflow-text 2.21.1,
ai-edge-litert 2.3.0; ``tests/pipelines/test_code_tokenizer.py``):

* TF graphs and SavedModels: ``tensorflow_text.SentencepieceTokenizer`` (the
  reference library as TF ops). A SavedModel holding :class:`CodeTokenizer`
  loads in a process that imports only ``tensorflow`` and ``tensorflow_text``.
* ``FastSentencepieceTokenizer`` (the one tokenizer whose op has a TFLite
  kernel in tf_text) does not implement byte fallback or an identity
  normalizer: on this model it drops tabs and turns non-ASCII characters into
  ``[UNK]``, so :class:`CodeTokenizer` refuses ``fast=True``.
* TFLite: the tokenize and detokenize graphs convert only as custom ops
  (``SentencepieceOp``, ``SentencepieceTokenizeOp``,
  ``SentencepieceDetokenizeOp``; no TFLite kernel, the interpreter fails with
  "unresolved custom op") or as Flex ops (``FlexSentencepieceOp``,
  ``FlexSentencepieceTokenizeOp``, ``FlexSentencepieceDetokenizeOp``), which
  neither LiteRT's nor TensorFlow's Python interpreter runs. So a TFLite code
  model takes and returns token ids (``layers.generation_export``'s
  ids-in/ids-out signature) and the host tokenizes: Python with
  :class:`CodeTokenizer` or the ``sentencepiece`` library on the saved
  ``sentencepiece.model`` (same ids), or on a device the SentencePiece C++
  library. A Flex delegate built with tensorflow-text's kernels linked in
  could run the Flex graph; that is not the stock ``tensorflow-lite-select-tf-ops``
  and was not tried.

Example::

    texts = code_training_texts(max_bytes=4_000_000)          # train-split stdlib files, in chunks
    tok = CodeTokenizer(train_code_tokenizer(texts, vocab_size=8000))
    ids = tok.tokenize(tf.constant(["def f(x):\\n\\treturn x\\r\\n"]))
    tok.detokenize(ids)                                        # the same bytes back
    tok.save("export/code_tokenizer"); tok = CodeTokenizer.load("export/code_tokenizer")
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import sentencepiece
from sentencepiece import sentencepiece_model_pb2

from pipelines.corpora import python_stdlib
from pipelines.corpora.splits import SPLITS, assign_split, stable_hash
from pipelines.sentencepiece import SentencepieceTokenizer, train_sentencepiece

__all__ = ["CodeTokenizer", "code_files", "code_training_texts", "train_code_tokenizer"]

META_SPACE = "\u2581"  # SentencePiece's "▁"
ESCAPE = "\ue000"  # private use; its own escape
ESCAPED_META = "\ue001"
# Codepoint rules for SentencePiece's normalization_rule_tsv / denormalization_rule_tsv.
_NORMALIZE_RULES = "2581\tE000 E001\nE000\tE000 E000\n"
_DENORMALIZE_RULES = "E000 E001\t2581\nE000 E000\tE000\n"
# What train_code_tokenizer fixes (the round trip depends on them).
_FIXED = ("model_type", "normalization", "keep_whitespace", "byte_fallback", "add_dummy_prefix",
          "normalization_rule_tsv", "denormalization_rule_tsv", "normalization_rule_name", "remove_extra_whitespaces")
_ORDER_SALT = "code_tokenizer_order"


def code_files(split="train", root=None, include_site_packages=False, max_file_bytes=200_000):
    """The Python files :func:`code_training_texts` reads, in a stable shuffled order.

    Args:
        split: ``"train"`` (default), ``"validation"``, ``"test"`` or None (all
            files). A file's split is :func:`~pipelines.corpora.splits.assign_split`
            of its path relative to ``root`` (90/5/5), so held-out files never
            train the tokenizer. (``tfsuite_code`` splits functions by
            qualified name instead; the two partitions are independent.)
        root: str or Path or None, a folder of Python sources; default the stdlib.
        include_site_packages: bool, also the installed packages under ``root``. Default False.
        max_file_bytes: int, larger files are skipped (``pydoc_data/topics.py``
            and encoding tables are data, not code). Default 200000.

    Returns:
        list of Path, ordered by a hash of the path, so a size cap samples the whole tree.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if not isinstance(max_file_bytes, int) or max_file_bytes < 1:
        raise ValueError(f"max_file_bytes must be a positive int, got {max_file_bytes!r}")
    root = Path(root or python_stdlib.stdlib_dir())
    if not root.is_dir():
        raise ValueError(f"root {root} is not a folder of Python sources")
    keyed = []
    for path in python_stdlib.source_files(root, include_site_packages=include_site_packages):
        key = path.relative_to(root).as_posix()
        if (split is None or assign_split(key) == split) and path.stat().st_size <= max_file_bytes:
            keyed.append((stable_hash(key, _ORDER_SALT), path))
    return [path for _, path in sorted(keyed)]


def _chunks(text, chunk_bytes):
    """Whole lines, joined into pieces of at most ``chunk_bytes`` UTF-8 bytes (a longer line stays whole)."""
    chunk, size = [], 0
    for line in text.splitlines(keepends=True):
        n = len(line.encode("utf-8"))
        if chunk and size + n > chunk_bytes:
            yield "".join(chunk)
            chunk, size = [], 0
        chunk.append(line)
        size += n
    if chunk:
        yield "".join(chunk)


def code_training_texts(split="train", max_bytes=4_000_000, chunk_bytes=4096, root=None,
                        include_site_packages=False, max_file_bytes=200_000):
    """Python source for :func:`train_code_tokenizer`: the files of :func:`code_files`, cut into chunks of lines.

    Chunks keep line breaks and indentation across lines, so BPE learns
    pieces such as ``":\\n▁▁▁▁▁▁▁▁"``; SentencePiece trains on each chunk as
    one sentence (it skips sentences over its ``max_sentence_length``).

    Args:
        split, root, include_site_packages, max_file_bytes: as :func:`code_files`.
        max_bytes: int, stop after this many UTF-8 bytes (the last file is
            taken whole). Default 4000000 (about a third of the stdlib).
        chunk_bytes: int, chunk size in bytes. Default 4096.

    Returns:
        list of str. Files that are not UTF-8 are skipped.
    """
    for name, value in (("max_bytes", max_bytes), ("chunk_bytes", chunk_bytes)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    texts, total = [], 0
    for path in code_files(split, root, include_site_packages, max_file_bytes):
        if total >= max_bytes:
            break
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        texts.extend(_chunks(text, chunk_bytes))
        total += len(data)
    if not texts:
        raise ValueError(f"no UTF-8 Python files of split {split!r} under {root or python_stdlib.stdlib_dir()}")
    return texts


def train_code_tokenizer(texts, vocab_size=8000, split_digits=True, character_coverage=0.9995,
                         max_piece_length=16, model_file=None, extra_special_tokens=(), **trainer_options):
    """Train the code BPE model (settings in the module doc); return its serialized model proto (``bytes``).

    Args:
        texts: iterable of ``str`` (e.g. :func:`code_training_texts`) or a
            ``tf.data.Dataset`` of scalar strings.
        vocab_size: int, default 8000; an upper bound (a small corpus gives
            fewer). Must leave room for the 5 special and 256 byte pieces and
            the characters kept by ``character_coverage``.
        split_digits: bool, one piece per digit (as LLaMA's tokenizer), so
            numbers are spelled rather than memorised. Default True.
        character_coverage: float, share of characters that get their own
            piece; the rest use byte pieces. Default 0.9995.
        max_piece_length: int, longest piece in characters (16 spaces = four
            indentation levels). Default 16.
        model_file: str or Path or None. Also write the model there.
        extra_special_tokens: sequence of str, user-defined pieces after ``[MASK]`` (ids 5, ...).
        **trainer_options: other ``SentencePieceTrainer`` options (``num_threads``...);
            the settings the round trip depends on are refused.

    Returns:
        bytes: the model proto, for :class:`CodeTokenizer`.
    """
    fixed = sorted(set(trainer_options) & set(_FIXED))
    if fixed:
        raise ValueError(f"train_code_tokenizer fixes {fixed} (the exact round trip depends on them); "
                         f"use pipelines.sentencepiece.train_sentencepiece for other settings")
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "normalize.tsv"
        rules.write_text(_NORMALIZE_RULES, encoding="utf-8")
        inverse = Path(tmp) / "denormalize.tsv"
        inverse.write_text(_DENORMALIZE_RULES, encoding="utf-8")
        model = train_sentencepiece(
            texts, vocab_size=vocab_size, model_type="bpe", normalization="identity", keep_whitespace=True,
            byte_fallback=True, character_coverage=character_coverage,
            extra_special_tokens=extra_special_tokens, add_dummy_prefix=False, split_digits=bool(split_digits),
            max_sentencepiece_length=max_piece_length, normalization_rule_tsv=str(rules),
            denormalization_rule_tsv=str(inverse), **trainer_options,
        )
    # The rules are compiled into the proto; the proto also records the (temporary) TSV paths,
    # which would make two trainings on the same texts differ. Drop them.
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.ClearField("normalization_rule_tsv")
    proto.denormalizer_spec.ClearField("normalization_rule_tsv")
    model = proto.SerializeToString()
    if model_file is not None:
        Path(model_file).write_bytes(model)
    return model


# Each must come back unchanged; together they exercise the U+2581 escape and the dummy prefix.
_CODE_MODEL_PROBES = ("  x\t=\r\n", f"{META_SPACE}{ESCAPE}{ESCAPED_META}{ESCAPE}{META_SPACE}")


class CodeTokenizer(SentencepieceTokenizer):
    """The code tokenizer: a :func:`train_code_tokenizer` model served by ``tensorflow_text`` ops.

    Everything (ids, :meth:`tokenize`, :meth:`detokenize`, :meth:`save` /
    :meth:`load` of ``sentencepiece.model`` and ``tokenizer.json``) is
    :class:`pipelines.sentencepiece.SentencepieceTokenizer`'s; this class
    checks that the model is a code model, so the exact round trip holds.

    Args:
        model: bytes, the model proto from :func:`train_code_tokenizer`.
        fast: must be False (``FastSentencepieceTokenizer`` cannot serve byte
            fallback; see the module doc). Default False.
        name: optional module name.

    Raises:
        ValueError: ``fast=True``, or a model that changes text (a
            normalizer, collapsed whitespace, a dummy prefix, no byte
            fallback, no U+2581 escape).
    """

    def __init__(self, model, fast=False, name=None):
        if fast:
            raise ValueError(
                "CodeTokenizer cannot be fast: FastSentencepieceTokenizer drops tabs and turns non-ASCII "
                "characters into [UNK] on byte-fallback models; tokenize on the host for TFLite (module doc)"
            )
        super().__init__(model, fast=False, name=name)
        if not self.byte_fallback:
            raise ValueError("CodeTokenizer needs a byte-fallback model; train it with train_code_tokenizer")
        processor = sentencepiece.SentencePieceProcessor(model_proto=self.model)
        changed = [probe for probe in _CODE_MODEL_PROBES if processor.decode(processor.encode(probe)) != probe]
        if changed:
            raise ValueError(
                f"not a code model: SentencePiece changes {changed[0]!r} into "
                f"{processor.decode(processor.encode(changed[0]))!r}; train it with train_code_tokenizer"
            )

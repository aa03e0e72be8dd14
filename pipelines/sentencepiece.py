"""SentencePiece training and a graph-friendly SentencePiece tokenizer, for Japanese and code.

Japanese has no spaces between words and code's whitespace is meaning, so
WordPiece's split on whitespace and punctuation does not fit them. SentencePiece
(Kudo and Richardson, 2018) segments raw text, spaces included (as ``"▁"``).
Models are trained with the ``sentencepiece`` package into an in-memory model
proto (:func:`train_sentencepiece`) and served by ``tensorflow_text``.

Round trip: ``detokenize(tokenize(x)) == normalize(x)`` exactly, where
``normalize`` is the model's normalizer: ``"nmt_nfkc"`` (default; NFKC, so
``"（"`` becomes ``"("`` and full-width Latin becomes ASCII, plus runs of
whitespace collapsed to one space and stripped at the ends) or ``"identity"``
with ``keep_whitespace=True`` (nothing changes: the setting for code). With
``byte_fallback=True`` (default) characters outside the learned alphabet are
spelled as UTF-8 byte pieces instead of ``[UNK]``, so nothing is lost.

Ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[START]`` 2 (SentencePiece's BOS), ``[END]`` 3
(EOS), ``[MASK]`` 4 (a user-defined piece: the literal text ``"[MASK]"``
tokenizes to it), as in :mod:`pipelines.wordpiece`.

Serving (measured with tensorflow-text 2.21.1, ai-edge-litert 2.3.0):

* ``fast=False`` (default): ``tensorflow_text.SentencepieceTokenizer``, the
  reference SentencePiece library as TF ops. Runs in graphs and SavedModels (a
  process importing only ``tensorflow`` and ``tensorflow_text`` loads them); no
  TFLite kernel.
* ``fast=True``: ``tensorflow_text.FastSentencepieceTokenizer`` loads the same
  model proto and gives the same ids for ``nmt_nfkc`` models without byte
  fallback; it does *not* support byte fallback (bytes come back as ``⁇``) and
  turns newlines into spaces for identity/keep-whitespace models, so the
  constructor refuses those. Its tokenize op converts to TFLite (custom op
  ``TFText>FastSentencepieceTokenize``, builtins otherwise) and runs in
  ``ai_edge_litert.interpreter.InterpreterWithCustomOps`` with
  ``tensorflow_text.core.pybinds.tflite_registrar.SELECT_TFTEXT_OPS``; its
  detokenize op (``TFText>FastSentencepieceDetokenize``) converts but crashes
  LiteRT (segmentation fault), so detokenize outside the TFLite model.

Example::

    model = train_sentencepiece(japanese_texts, vocab_size=8000)
    tok = SentencepieceTokenizer(model)
    ids = tok.tokenize(tf.constant(["ファイルを開く"]))   # ragged int32
    tok.detokenize(ids)                                    # ["ファイルを開く"]
    tok.save("export/ja_tokenizer"); tok = SentencepieceTokenizer.load("export/ja_tokenizer")
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from pipelines.text import drop_ids

__all__ = ["SPECIAL_PIECES", "SentencepieceTokenizer", "train_sentencepiece"]

SPECIAL_PIECES = ("[PAD]", "[UNK]", "[START]", "[END]", "[MASK]")
MODEL_FILE = "sentencepiece.model"
SETTINGS_FILE = "tokenizer.json"
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
MODEL_TYPES = ("unigram", "bpe", "char", "word")
_FORMAT_VERSION = 1


def _texts(texts):
    """Python strings from an iterable of ``str``/``bytes`` or a dataset of scalar strings."""
    if isinstance(texts, tf.data.Dataset):
        spec = texts.element_spec
        if not (isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string and spec.shape.rank == 0):
            raise ValueError(
                f"train_sentencepiece expected a tf.data.Dataset of scalar tf.string elements, got element_spec {spec}; "
                f"map it to the text field first, e.g. ds.map(lambda ex: ex['ja'])"
            )
        texts = texts.as_numpy_iterator()
    elif isinstance(texts, (str, bytes)):
        raise ValueError("train_sentencepiece expected an iterable of strings, got a single string; wrap it in a list")
    for text in texts:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if not isinstance(text, str):
            raise ValueError(f"train_sentencepiece expected strings, got an element of type {type(text).__name__}")
        if text:
            yield text


def train_sentencepiece(
    texts,
    vocab_size=8000,
    model_type="unigram",
    normalization="nmt_nfkc",
    keep_whitespace=False,
    byte_fallback=True,
    character_coverage=0.9995,
    max_sentence_length=1 << 16,
    model_file=None,
    extra_special_tokens=(),
    **trainer_options,
):
    """Train a SentencePiece model; return its serialized model proto (``bytes``).

    Args:
        texts: iterable of ``str`` or a ``tf.data.Dataset`` of scalar strings.
        vocab_size: int, default 8000. Upper bound (``hard_vocab_limit=False``:
            a small corpus gives fewer pieces). Must exceed the alphabet kept by
            ``character_coverage`` plus 5 special and, with byte fallback, 256 byte pieces.
        model_type: ``"unigram"`` (default), ``"bpe"``, ``"char"`` or ``"word"``.
        normalization: ``"nmt_nfkc"`` (default), ``"nfkc"``, ``"nmt_nfkc_cf"``,
            ``"nfkc_cf"`` (case folded) or ``"identity"``.
        keep_whitespace: bool, default False. Keep runs of spaces, leading and
            trailing whitespace and let pieces span spaces (for code, with
            ``normalization="identity"``).
        byte_fallback: bool, default True. Unknown characters become UTF-8 byte
            pieces, not ``[UNK]`` (not supported by ``fast=True`` serving).
        character_coverage: float, default 0.9995. Share of characters covered
            by the alphabet (0.9995 suits Japanese; 1.0 for small alphabets).
        max_sentence_length: int, default 65536. Longer texts (bytes) are skipped in training.
        model_file: str or Path or None. Also write the model there.
        extra_special_tokens: sequence of str, default (). More user-defined
            pieces (for example ``"[SEP]"``), ids 5, 6, ... right after ``[MASK]``.
        **trainer_options: any other ``SentencePieceTrainer`` option (``num_threads``, ``seed_sentencepiece_size``...).

    Returns:
        bytes: the model proto, for :class:`SentencepieceTokenizer`.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {normalization!r}; expected one of {NORMALIZATIONS}")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"unknown model_type {model_type!r}; expected one of {MODEL_TYPES}")
    if not isinstance(vocab_size, int) or vocab_size <= len(SPECIAL_PIECES):
        raise ValueError(f"vocab_size must be an int larger than the {len(SPECIAL_PIECES)} special pieces, got {vocab_size!r}")
    if "user_defined_symbols" in trainer_options:
        raise ValueError("pass user_defined_symbols as extra_special_tokens (they follow [MASK])")
    texts = _texts(texts)
    first = next(texts, None)
    if first is None:
        raise ValueError("train_sentencepiece got no (non-empty) texts to learn from")

    def all_texts():
        yield first
        yield from texts

    options = {
        "vocab_size": vocab_size,
        "model_type": model_type,
        "normalization_rule_name": normalization,
        "byte_fallback": byte_fallback,
        "character_coverage": character_coverage,
        "max_sentence_length": max_sentence_length,
        "hard_vocab_limit": False,
        "pad_id": 0, "unk_id": 1, "bos_id": 2, "eos_id": 3,
        "pad_piece": "[PAD]", "unk_piece": "[UNK]", "bos_piece": "[START]", "eos_piece": "[END]",
        "user_defined_symbols": ["[MASK]"] + list(extra_special_tokens),
        "minloglevel": 2,
    }  # fmt: skip
    if keep_whitespace:
        options.update(remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, split_by_whitespace=False)
    options.update(trainer_options)
    model = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(sentence_iterator=all_texts(), model_writer=model, **options)
    except RuntimeError as error:
        raise ValueError(f"SentencePiece training failed: {error}") from error
    model = model.getvalue()
    if model_file is not None:
        Path(model_file).write_bytes(model)
    return model


class SentencepieceTokenizer(tf.Module):
    """SentencePiece tokenizer served by ``tensorflow_text`` ops.

    Args:
        model: bytes, a serialized SentencePiece model proto (from
            :func:`train_sentencepiece`, or a ``.model`` file's content) with
            ``[PAD]``, ``[UNK]``, ``[START]``, ``[END]`` and ``[MASK]`` pieces.
        fast: bool, default False. Serve with ``FastSentencepieceTokenizer``
            (its tokenize op runs in TFLite); only for models without byte
            fallback whose normalizer collapses whitespace (see module doc).
        name: optional module name.

    Shapes:
        :meth:`tokenize`: strings ``(batch,)`` -> ragged int32 ``(batch, None)``
        (a scalar gives 1-D int32); no ``[START]``/``[END]`` added.
        :meth:`detokenize`: ids ``(batch, None)`` ragged or padded -> strings
        ``(batch,)``; ``[PAD]``, ``[START]``, ``[END]`` dropped.

    Example::

        tok = SentencepieceTokenizer(train_sentencepiece(texts, vocab_size=4000))
        tok.detokenize(tok.tokenize(tf.constant(["サーバーの起動"])))  # [b"サーバーの起動"]
    """

    def __init__(self, model, fast=False, name=None):
        super().__init__(name=name)
        if isinstance(model, (str, Path)):
            raise ValueError(
                "SentencepieceTokenizer expects the model proto bytes; use SentencepieceTokenizer.load(directory) for files"
            )
        model = bytes(model)
        proto = sentencepiece_model_pb2.ModelProto()
        try:
            proto.ParseFromString(model)
        except Exception as error:  # protobuf raises DecodeError, a library-specific type
            raise ValueError(f"not a SentencePiece model proto: {error}") from error
        pieces = [p.piece for p in proto.pieces]
        if not pieces:
            raise ValueError("not a SentencePiece model proto: it has no pieces")
        missing = [p for p in SPECIAL_PIECES if p not in pieces]
        if missing:
            raise ValueError(
                f"SentencePiece model lacks the special pieces {missing}; train it with train_sentencepiece "
                f"(pad_piece='[PAD]', unk_piece='[UNK]', bos_piece='[START]', eos_piece='[END]', user_defined_symbols=['[MASK]'])"
            )
        self.fast = bool(fast)
        if self.fast:
            spec = proto.normalizer_spec
            if proto.trainer_spec.byte_fallback or not spec.remove_extra_whitespaces:
                raise ValueError(
                    "fast=True (FastSentencepieceTokenizer) mis-tokenizes models with byte_fallback or keep_whitespace; "
                    "train with byte_fallback=False, keep_whitespace=False, or serve with fast=False"
                )
        self._model = model
        self._pieces = tuple(pieces)
        self._ids = {piece: i for i, piece in enumerate(pieces)}
        self.byte_fallback = bool(proto.trainer_spec.byte_fallback)
        self.normalization = proto.normalizer_spec.name
        if self.fast:
            self._sentencepiece = tf_text.FastSentencepieceTokenizer(model)
        else:
            self._sentencepiece = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)
        self._tokens = tf.constant(list(pieces), tf.string)

    # -- ids ------------------------------------------------------------------
    @property
    def model(self):
        """The serialized model proto (bytes)."""
        return self._model

    @property
    def vocab(self):
        return list(self._pieces)

    @property
    def vocab_size(self):
        return len(self._pieces)

    @property
    def pad_id(self):
        return self._ids["[PAD]"]

    @property
    def unk_id(self):
        return self._ids["[UNK]"]

    @property
    def start_id(self):
        return self._ids["[START]"]

    @property
    def end_id(self):
        return self._ids["[END]"]

    @property
    def mask_id(self):
        return self._ids["[MASK]"]

    @property
    def special_ids(self):
        """Ids never chosen for masking or shown by :meth:`detokenize` (PAD, START, END)."""
        return (self.pad_id, self.start_id, self.end_id)

    # -- graph ops ------------------------------------------------------------
    def tokenize(self, texts):
        """Strings ``(batch,)`` -> ragged int32 ids ``(batch, None)``."""
        texts = tf.convert_to_tensor(texts, tf.string)
        rank = texts.shape.rank
        if rank is not None and rank > 1:
            raise ValueError(
                f"SentencepieceTokenizer.tokenize expected strings of rank 1 (batch,) or a scalar, got shape {texts.shape}"
            )
        ids = self._sentencepiece.tokenize(texts)
        return tf.cast(ids, tf.int32)

    def detokenize(self, ids):
        """Ids ``(batch, None)`` (ragged, or dense padded with ``pad_id``) -> strings ``(batch,)``; 1-D ids give a scalar."""
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise ValueError(f"SentencepieceTokenizer.detokenize expected integer ids, got dtype {ids.dtype.name}")
        rank = ids.shape.rank
        if rank not in (1, 2):
            raise ValueError(
                f"SentencepieceTokenizer.detokenize expected ids of rank 2 (batch, length) or 1 (length,), got shape {ids.shape}"
            )
        ids = tf.cast(ids, tf.int32)
        if rank == 1:
            return self.detokenize(ids[tf.newaxis])[0]
        return self._sentencepiece.detokenize(drop_ids(ids, self.special_ids))

    def id_to_token(self, ids):
        """The piece strings of ``ids`` (any shape, ragged or dense)."""
        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(tf.gather, self._tokens, tf.cast(ids, tf.int32))
        return tf.gather(self._tokens, tf.cast(ids, tf.int32))

    # -- files ----------------------------------------------------------------
    def get_config(self):
        return {
            "class": type(self).__name__,
            "format_version": _FORMAT_VERSION,
            "fast": self.fast,
            "normalization": self.normalization,
            "byte_fallback": self.byte_fallback,
            "vocab_size": self.vocab_size,
        }

    def save(self, directory):
        """Write ``directory/sentencepiece.model`` and ``directory/tokenizer.json`` (settings)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / MODEL_FILE).write_bytes(self._model)
        (directory / SETTINGS_FILE).write_text(json.dumps(self.get_config(), indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory, fast=None):
        """The tokenizer :meth:`save` wrote to ``directory`` (``fast`` overrides the saved setting)."""
        directory = Path(directory)
        for name in (MODEL_FILE, SETTINGS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: save a {cls.__name__} there with .save(directory)")
        config = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
        if config.get("class") != cls.__name__:
            raise ValueError(f"{directory / SETTINGS_FILE} holds a {config.get('class')!r}, not a {cls.__name__}")
        return cls((directory / MODEL_FILE).read_bytes(), fast=config["fast"] if fast is None else fast)

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
from pathlib import Path

import sentencepiece
import tensorflow as tf
import tensorflow_text as tf_text
from sentencepiece import sentencepiece_model_pb2

from pipelines.tokenizer import RESERVED_TOKENS, Tokenizer, check_training_texts

__all__ = ["SPECIAL_PIECES", "SentencepieceTokenizer", "train_sentencepiece"]

SPECIAL_PIECES = RESERVED_TOKENS
MODEL_FILE = "sentencepiece.model"
NORMALIZATIONS = ("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf", "identity")
MODEL_TYPES = ("unigram", "bpe", "char", "word")


def _texts(texts):
    """Python strings from an iterable of ``str``/``bytes`` or a dataset of scalar strings."""
    check_training_texts(texts, "train_sentencepiece")
    if isinstance(texts, tf.data.Dataset):
        texts = texts.as_numpy_iterator()
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


class SentencepieceTokenizer(Tokenizer):
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

    Ids, input checks, :meth:`id_to_token` and :meth:`save`/:meth:`load`
    (``sentencepiece.model``, the proto, and ``tokenizer.json``) come from
    :class:`pipelines.tokenizer.Tokenizer`.

    Example::

        tok = SentencepieceTokenizer(train_sentencepiece(texts, vocab_size=4000))
        tok.detokenize(tok.tokenize(tf.constant(["サーバーの起動"])))  # [b"サーバーの起動"]
    """

    _model_file = MODEL_FILE

    def __init__(self, model, fast=False, name=None):
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
        if fast and (proto.trainer_spec.byte_fallback or not proto.normalizer_spec.remove_extra_whitespaces):
            raise ValueError(
                "fast=True (FastSentencepieceTokenizer) mis-tokenizes models with byte_fallback or keep_whitespace; "
                "train with byte_fallback=False, keep_whitespace=False, or serve with fast=False"
            )
        super().__init__(pieces, name=name)
        self.fast = bool(fast)
        self._model = model
        self.byte_fallback = bool(proto.trainer_spec.byte_fallback)
        self.normalization = proto.normalizer_spec.name
        if self.fast:
            self._sentencepiece = tf_text.FastSentencepieceTokenizer(model)
        else:
            self._sentencepiece = tf_text.SentencepieceTokenizer(model=model, out_type=tf.int32)

    # -- ids ------------------------------------------------------------------
    @property
    def model(self):
        """The serialized model proto (bytes)."""
        return self._model

    # -- tensorflow_text ops --------------------------------------------------
    def _tokenize(self, texts):
        return tf.cast(self._sentencepiece.tokenize(texts), tf.int32)

    def _detokenize(self, ids):
        return self._sentencepiece.detokenize(ids)

    # -- files ----------------------------------------------------------------
    def _settings(self):
        return {"fast": self.fast, "normalization": self.normalization, "byte_fallback": self.byte_fallback}

    def _write_model(self, path):
        path.write_bytes(self._model)

    @classmethod
    def load(cls, directory, fast=None):
        """The tokenizer :meth:`save` wrote to ``directory`` (``fast``, bool or None, overrides the saved setting)."""
        return super().load(directory, fast=fast)

    @classmethod
    def _from_files(cls, directory, config):
        return cls((directory / MODEL_FILE).read_bytes(), fast=config["fast"])

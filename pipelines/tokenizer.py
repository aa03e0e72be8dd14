"""The base of the subword tokenizers: reserved ids, input checks, id lookup and files.

:class:`pipelines.wordpiece.WordpieceTokenizer` (words split on whitespace and
punctuation, then WordPiece) and
:class:`pipelines.sentencepiece.SentencepieceTokenizer` (raw text, for Japanese
and code) share everything here and add only their ``tensorflow_text`` ops and
their model file:

* the reserved tokens :data:`RESERVED_TOKENS` and their ids (``pad_id``,
  ``unk_id``, ``start_id``, ``end_id``, ``mask_id``, :attr:`Tokenizer.special_ids`);
* :meth:`Tokenizer.tokenize` and :meth:`Tokenizer.detokenize`, which check
  their inputs at the public boundary, turn a scalar or 1-D input into a batch
  of one and drop ``[PAD]``, ``[START]`` and ``[END]`` before detokenizing
  (with :func:`pipelines.text.drop_ids`, TFLite builtins only);
* :meth:`Tokenizer.id_to_token`;
* :meth:`Tokenizer.save` / :meth:`Tokenizer.load`: a folder holding the model
  file (``vocab.txt`` or ``sentencepiece.model``) and ``tokenizer.json`` with
  the settings of :meth:`Tokenizer.get_config`;
* :func:`check_training_texts`, the input check of the vocabulary learners.

Everything stays ``tf`` ops on ``tf.Module`` attributes, so a SavedModel holding
a tokenizer loads in a process that imports only ``tensorflow`` and
``tensorflow_text``.

Example (a subclass)::

    class CharTokenizer(Tokenizer):
        _model_file = "chars.txt"

        def _tokenize(self, texts):                  # (batch,) strings
            ...                                      # -> ragged int32 (batch, None)

        def _detokenize(self, ids):                  # ragged int32, specials dropped
            ...                                      # -> (batch,) strings

        # and, for save/load: _settings, _write_model(path), _from_files(directory, config)
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow as tf

from pipelines.text import drop_ids

__all__ = ["RESERVED_TOKENS", "SETTINGS_FILE", "Tokenizer", "check_training_texts"]

RESERVED_TOKENS = ("[PAD]", "[UNK]", "[START]", "[END]", "[MASK]")
SETTINGS_FILE = "tokenizer.json"
FORMAT_VERSION = 1


def check_training_texts(texts, learner):
    """Reject a single string or a dataset whose elements are not scalar strings.

    Args:
        texts: what a vocabulary learner got: an iterable of ``str``/``bytes`` or
            a ``tf.data.Dataset``.
        learner: str. The learner's name, for the error message.

    Raises:
        ValueError: ``texts`` is a ``str``/``bytes``, or a dataset whose
            ``element_spec`` is not a scalar ``tf.string``.
    """
    if isinstance(texts, tf.data.Dataset):
        spec = texts.element_spec
        if not (isinstance(spec, tf.TensorSpec) and spec.dtype == tf.string and spec.shape.rank == 0):
            raise ValueError(
                f"{learner} expected a tf.data.Dataset of scalar tf.string elements, got element_spec {spec}; "
                f"map it to the text field first, e.g. ds.map(lambda ex: ex['text'])"
            )
    elif isinstance(texts, (str, bytes)):
        raise ValueError(f"{learner} expected an iterable of strings, got a single string; wrap it in a list")


def _reserved_id(token, role):
    """A read-only property: the id of the reserved ``token`` in the vocabulary."""
    return property(lambda self: self._vocab.index(token), doc=f"int: id of ``{token}``, {role}.")


class Tokenizer(tf.Module):
    """A subword tokenizer over a fixed vocabulary holding :data:`RESERVED_TOKENS`.

    Subclasses pass their vocabulary to ``__init__`` after checking it, and
    implement ``_tokenize`` (a batch of strings to ragged int32 ids),
    ``_detokenize`` (ragged int32 ids without PAD/START/END to strings),
    ``_settings`` (the ``tokenizer.json`` fields of their own), ``_write_model``
    and ``_from_files`` (their model file), and set ``_model_file``.

    Args:
        vocab: sequence of str. The token of each id; holds every one of
            :data:`RESERVED_TOKENS`.
        name: str or None, default None. Module name (None: from the class name).

    Shapes:
        :meth:`tokenize`: strings ``(batch,)`` -> ragged int32 ``(batch, None)``
        (a scalar gives 1-D int32); no ``[START]``/``[END]`` are added.
        :meth:`detokenize`: int ids ``(batch, None)`` ragged or padded -> strings
        ``(batch,)`` (1-D ids give a scalar); ``[PAD]``, ``[START]`` and
        ``[END]`` are dropped.
    """

    _model_file = None  # the model file :meth:`save` writes next to tokenizer.json

    def __init__(self, vocab, name=None):
        super().__init__(name=name)
        self._vocab = tuple(vocab)
        self._tokens = tf.constant(list(vocab), tf.string)

    # -- ids ------------------------------------------------------------------
    @property
    def vocab(self):
        """list of str: the token of each id."""
        return list(self._vocab)

    @property
    def vocab_size(self):
        """int: the number of ids."""
        return len(self._vocab)

    pad_id = _reserved_id("[PAD]", "fills batches to one length")
    unk_id = _reserved_id("[UNK]", "stands for text the vocabulary cannot spell")
    start_id = _reserved_id("[START]", "opens a sequence")
    end_id = _reserved_id("[END]", "closes a sequence")
    mask_id = _reserved_id("[MASK]", "replaces hidden tokens in masked language modeling")

    @property
    def special_ids(self):
        """Ids never chosen for masking or shown by :meth:`detokenize` (PAD, START, END)."""
        return (self.pad_id, self.start_id, self.end_id)

    # -- graph ops ------------------------------------------------------------
    def tokenize(self, texts):
        """Strings ``(batch,)`` -> ragged int32 ids ``(batch, None)``; a scalar string gives 1-D ids."""
        texts = tf.convert_to_tensor(texts, tf.string)
        rank = texts.shape.rank
        if rank is not None and rank > 1:
            raise ValueError(
                f"{type(self).__name__}.tokenize expected strings of rank 1 (batch,) or a scalar, got shape {texts.shape}"
            )
        if rank == 0:
            # Some tf_text ops (FastBertNormalizer) only accept a batch dimension.
            return self._tokenize(texts[tf.newaxis])[0]
        return self._tokenize(texts)

    def detokenize(self, ids):
        """Ids ``(batch, None)`` (ragged, or dense padded with ``pad_id``) -> strings ``(batch,)``; 1-D ids give a scalar.

        ``[PAD]``, ``[START]`` and ``[END]`` are dropped before the pieces are
        joined back into text.
        """
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.convert_to_tensor(ids)
        if not ids.dtype.is_integer:
            raise ValueError(f"{type(self).__name__}.detokenize expected integer ids, got dtype {ids.dtype.name}")
        rank = ids.shape.rank
        if rank not in (1, 2):
            raise ValueError(
                f"{type(self).__name__}.detokenize expected ids of rank 2 (batch, length) or 1 (length,), "
                f"got shape {ids.shape}"
            )
        ids = tf.cast(ids, tf.int32)
        if rank == 1:
            return self.detokenize(ids[tf.newaxis])[0]
        return self._detokenize(drop_ids(ids, self.special_ids))

    def id_to_token(self, ids):
        """The token strings of ``ids`` (any shape, ragged or dense)."""
        if isinstance(ids, tf.RaggedTensor):
            return tf.ragged.map_flat_values(tf.gather, self._tokens, tf.cast(ids, tf.int32))
        return tf.gather(self._tokens, tf.cast(ids, tf.int32))

    def _tokenize(self, texts):
        """Strings ``(batch,)`` -> ragged int32 ids ``(batch, None)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _tokenize")

    def _detokenize(self, ids):
        """Ragged int32 ids ``(batch, None)`` without PAD/START/END -> strings ``(batch,)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _detokenize")

    # -- files ----------------------------------------------------------------
    def get_config(self):
        """dict: what ``tokenizer.json`` holds: class, format version, the subclass's settings, vocab size."""
        return {
            "class": type(self).__name__,
            "format_version": FORMAT_VERSION,
            **self._settings(),
            "vocab_size": self.vocab_size,
        }

    def save(self, directory):
        """Write the model file and ``tokenizer.json`` (:meth:`get_config`) to ``directory``; return it as a Path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_model(directory / self._model_file)
        settings = json.dumps(self.get_config(), indent=2, ensure_ascii=False)
        (directory / SETTINGS_FILE).write_text(settings + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory, **overrides):
        """The tokenizer :meth:`save` wrote to ``directory``.

        Args:
            directory: str or Path. Holds the model file and ``tokenizer.json``.
            **overrides: settings that replace the saved ones; None keeps the saved value.
        """
        directory = Path(directory)
        for name in (cls._model_file, SETTINGS_FILE):
            if not (directory / name).is_file():
                raise FileNotFoundError(f"{directory / name} not found: save a {cls.__name__} there with .save(directory)")
        config = json.loads((directory / SETTINGS_FILE).read_text(encoding="utf-8"))
        if config.get("class") != cls.__name__:
            raise ValueError(f"{directory / SETTINGS_FILE} holds a {config.get('class')!r}, not a {cls.__name__}")
        config.update((key, value) for key, value in overrides.items() if value is not None)
        return cls._from_files(directory, config)

    def _settings(self):
        """dict: the subclass's own ``tokenizer.json`` fields (constructor arguments and model facts)."""
        return {}

    def _write_model(self, path):
        """Write the model file (vocabulary or model proto) to ``path``."""
        raise NotImplementedError(f"{type(self).__name__} must implement _write_model")

    @classmethod
    def _from_files(cls, directory, config):
        """The tokenizer from ``directory``'s model file and the ``tokenizer.json`` settings ``config``."""
        raise NotImplementedError(f"{cls.__name__} must implement _from_files")

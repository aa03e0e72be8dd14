"""WordPiece vocabulary learning and a graph-friendly WordPiece tokenizer.

The vocabulary is learned with ``tensorflow_text.tools.wordpiece_vocab``
(``bert_vocab_from_dataset``) and served by ``tensorflow_text.FastBertNormalizer``
+ ``tensorflow_text.FastWordpieceTokenizer``: their ops run in TF graphs,
SavedModels (TF Serving) and TFLite.

Normalization, the one thing learner and tokenizer must agree on: the learner
sees the text *after* the same ``FastBertNormalizer`` the tokenizer uses
(control characters dropped, whitespace made spaces; with ``lower_case=True``
also case folding with compatibility normalization, NFD and accent stripping,
so ``"ß"`` becomes ``"ss"`` and ``"…"`` becomes ``"..."``), then BERT's basic
split on whitespace and punctuation. So ``detokenize(tokenize(x))`` equals
``x`` normalized that way, with every punctuation character (Unicode ``P*`` and
ASCII symbols) split off as its own word and words joined by single spaces:
``"Open the Café-file."`` comes back as ``"open the cafe - file ."``. In Python
terms: ``NFD(NFKC(x).casefold())`` minus combining marks, split, joined.
Words with a character the vocabulary lacks come back as ``[UNK]``; Japanese
and code go to :mod:`pipelines.sentencepiece` instead (no word spaces).

Strings in TFLite (measured with tensorflow-text 2.21.1, ai-edge-litert 2.3.0):
a ``tf.function`` taking a ``tf.string`` batch and calling :meth:`WordpieceTokenizer.tokenize`
(and :meth:`WordpieceTokenizer.detokenize`) converts with
``tf.lite.TFLiteConverter`` using only ``TFLITE_BUILTINS`` plus
``allow_custom_ops=True`` (no ``SELECT_TF_OPS``/Flex): the custom ops are
``FastBertNormalize``, ``FastWordpieceTokenizeWithOffsets``,
``TFText>FastWordpieceDetokenize`` and ``RaggedTensorToTensor``. It runs, with
string inputs and outputs, in::

    from ai_edge_litert.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar
    interpreter = InterpreterWithCustomOps(
        model_content=tflite_bytes,
        custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS)

(``tensorflow_text.tflite_registrar`` does not exist in 2.21; the registrar
lives at ``tensorflow_text.core.pybinds.tflite_registrar``. The plain
``ai_edge_litert.interpreter.Interpreter`` and ``tf.lite.Interpreter`` reject
``custom_op_registerers``.) :meth:`detokenize` drops special ids with
cumsum/gather arithmetic instead of ``tf.ragged.boolean_mask`` because the
latter emits an int64 ``UnsortedSegmentSum`` that TFLite has no builtin for
(:func:`pipelines.text.drop_ids`).

Example::

    texts = ["Open the file.", "Close the file."]
    vocab = learn_wordpiece_vocab(texts, vocab_size=100)
    tok = WordpieceTokenizer(vocab)
    ids = tok.tokenize(tf.constant(["Open the file."]))  # ragged int32
    tok.detokenize(ids)                                     # [b"open the file ."]
    tok.save("export/tokenizer"); tok = WordpieceTokenizer.load("export/tokenizer")
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text
from tensorflow_text.tools.wordpiece_vocab import bert_vocab_from_dataset

from pipelines.tokenizer import RESERVED_TOKENS, SETTINGS_FILE, Tokenizer, check_training_texts

__all__ = ["RESERVED_TOKENS", "WordpieceTokenizer", "learn_wordpiece_vocab"]

VOCAB_FILE = "vocab.txt"


def _texts_dataset(texts):
    """A ``tf.data.Dataset`` of scalar strings from a dataset or an iterable of ``str``."""
    check_training_texts(texts, "learn_wordpiece_vocab")
    if isinstance(texts, tf.data.Dataset):
        return texts
    texts = list(texts)
    if not texts:
        raise ValueError("learn_wordpiece_vocab got no texts to learn from")
    bad = next((t for t in texts if not isinstance(t, (str, bytes))), None)
    if bad is not None:
        raise ValueError(f"learn_wordpiece_vocab expected strings, got an element of type {type(bad).__name__}")
    return tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))


def learn_wordpiece_vocab(
    texts,
    vocab_size=8000,
    lower_case=True,
    extra_reserved_tokens=(),
    batch_size=1024,
    **learn_params,
):
    """Learn a WordPiece vocabulary with ``tensorflow_text``'s BERT vocabulary learner.

    Args:
        texts: iterable of ``str`` or a ``tf.data.Dataset`` of scalar strings.
        vocab_size: int, default 8000. Target size; the learner picks a count
            threshold by binary search, so the result is about this size:
            smaller when the corpus has fewer distinct pieces, and possibly a
            little larger for tiny targets because every character (up to
            ``max_unique_chars``) is kept as a piece and a ``##`` suffix piece.
        lower_case: bool, default True. Must equal the tokenizer's
            ``lower_case``; the text is normalized with the same
            ``FastBertNormalizer`` before learning.
        extra_reserved_tokens: sequence of str, default (). Extra special tokens
            placed right after :data:`RESERVED_TOKENS`.
        batch_size: int, default 1024. Texts per normalization batch.
        **learn_params: passed to ``wordpiece_tokenizer_learner_lib.learn``
            (for example ``max_unique_chars``, ``max_token_length``).

    Returns:
        list of str: ``"[PAD]"`` (id 0), ``"[UNK]"``, ``"[START]"``, ``"[END]"``,
        ``"[MASK]"``, the extra reserved tokens, then the learned pieces
        (suffix pieces prefixed with ``"##"``).
    """
    reserved = list(RESERVED_TOKENS) + list(extra_reserved_tokens)
    if len(set(reserved)) != len(reserved):
        raise ValueError(f"reserved tokens must be distinct, got {reserved}")
    if not isinstance(vocab_size, int) or vocab_size <= len(reserved):
        raise ValueError(f"vocab_size must be an int larger than the {len(reserved)} reserved tokens, got {vocab_size!r}")
    normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=bool(lower_case))
    normalize = tf.autograph.experimental.do_not_convert(normalizer.normalize)  # plain tf ops: skip autograph's slow pass
    dataset = _texts_dataset(texts).batch(batch_size).map(normalize).prefetch(2)
    # The text is already normalized exactly as the tokenizer will see it, so the
    # learner's own BasicTokenizer must not lower-case it again (its case folding
    # is NFKC-based and differs from FastBertNormalizer on a few characters).
    return bert_vocab_from_dataset.bert_vocab_from_dataset(
        dataset,
        vocab_size=vocab_size,
        reserved_tokens=reserved,
        bert_tokenizer_params={"lower_case": False},
        learn_params=learn_params,
    )


class WordpieceTokenizer(Tokenizer):
    """BERT-style WordPiece tokenizer: ``FastBertNormalizer`` then ``FastWordpieceTokenizer``.

    Args:
        vocab: sequence of str. Must start with :data:`RESERVED_TOKENS`
            (``"[PAD]"`` id 0, ``"[UNK]"``, ``"[START]"``, ``"[END]"``, ``"[MASK]"``);
            usually the output of :func:`learn_wordpiece_vocab`.
        lower_case: bool, default True. Lower-case, NFD-decompose and strip
            accents before splitting; must match the vocabulary's learner.
        suffix_indicator: str, default ``"##"``. Prefix of word-internal pieces.
        max_bytes_per_word: int, default 100. Longer words become ``[UNK]``.
        name: optional module name.

    Shapes:
        :meth:`tokenize`: strings ``(batch,)`` -> ``tf.RaggedTensor`` int32
        ``(batch, None)`` (a scalar string gives a 1-D int32 tensor); no
        ``[START]``/``[END]`` are added.
        :meth:`detokenize`: int ids ``(batch, None)`` ragged or padded -> strings
        ``(batch,)``; ``[PAD]``, ``[START]`` and ``[END]`` are dropped.

    Ids, input checks, :meth:`id_to_token` and :meth:`save`/:meth:`load`
    (``vocab.txt``, one token a line, and ``tokenizer.json``) come from
    :class:`pipelines.tokenizer.Tokenizer`.

    Example::

        tok = WordpieceTokenizer(learn_wordpiece_vocab(texts, vocab_size=2000))
        ids = tok.tokenize(tf.constant(["Open the file."]))
        tok.detokenize(ids)  # [b"open the file ."]
    """

    _model_file = VOCAB_FILE

    def __init__(self, vocab, lower_case=True, suffix_indicator="##", max_bytes_per_word=100, name=None):
        vocab = [v.decode("utf-8") if isinstance(v, bytes) else v for v in vocab]
        if tuple(vocab[: len(RESERVED_TOKENS)]) != RESERVED_TOKENS:
            raise ValueError(
                f"WordpieceTokenizer expected the vocabulary to start with {list(RESERVED_TOKENS)}, "
                f"got {vocab[: len(RESERVED_TOKENS)]}; learn it with learn_wordpiece_vocab"
            )
        bad = next((v for v in vocab if not isinstance(v, str) or not v or v != v.strip() or "\n" in v), None)
        if bad is not None:
            raise ValueError(f"vocabulary tokens must be non-empty strings without whitespace at the ends, got {bad!r}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate tokens")
        if not isinstance(max_bytes_per_word, int) or max_bytes_per_word < 1:
            raise ValueError(f"max_bytes_per_word must be a positive int, got {max_bytes_per_word!r}")
        super().__init__(vocab, name=name)
        self.lower_case = bool(lower_case)
        self.suffix_indicator = suffix_indicator
        self.max_bytes_per_word = max_bytes_per_word
        self._normalizer = tf_text.FastBertNormalizer(lower_case_nfd_strip_accents=self.lower_case)
        self._wordpiece = tf_text.FastWordpieceTokenizer(
            vocab=list(vocab),
            suffix_indicator=suffix_indicator,
            max_bytes_per_word=max_bytes_per_word,
            token_out_type=tf.int32,
            unknown_token="[UNK]",
            support_detokenization=True,
        )

    # -- tensorflow_text ops --------------------------------------------------
    def _tokenize(self, texts):
        return self._wordpiece.tokenize(self._normalizer.normalize(texts))

    def _detokenize(self, ids):
        return self._wordpiece.detokenize(ids)

    # -- files ----------------------------------------------------------------
    def _settings(self):
        return {
            "lower_case": self.lower_case,
            "suffix_indicator": self.suffix_indicator,
            "max_bytes_per_word": self.max_bytes_per_word,
            "reserved_tokens": list(RESERVED_TOKENS),
        }

    def _write_model(self, path):
        path.write_text("\n".join(self._vocab) + "\n", encoding="utf-8")

    @classmethod
    def _from_files(cls, directory, config):
        vocab = (directory / VOCAB_FILE).read_text(encoding="utf-8").split("\n")[:-1]
        if len(vocab) != config["vocab_size"]:
            raise ValueError(f"{directory / VOCAB_FILE} has {len(vocab)} tokens, {SETTINGS_FILE} says {config['vocab_size']}")
        return cls(
            vocab,
            lower_case=config["lower_case"],
            suffix_indicator=config["suffix_indicator"],
            max_bytes_per_word=config["max_bytes_per_word"],
        )

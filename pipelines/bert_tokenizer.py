"""BERT's WordPiece over a pretrained ``vocab.txt`` (MiniLM's), in the graph, and BERT's input packing.

A pretrained BERT comes with its own vocabulary, whose reserved tokens
(``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103 in
the uncased English one) are not those of our learned vocabularies
(:mod:`pipelines.wordpiece`), so it gets this small tokenizer of its own. The
ops are tensorflow-text's ``FastBertTokenizer``: ``FastBertNormalize`` (lower
case, NFD, accents stripped: BERT's uncased normalization) and
``FastWordpieceTokenizeWithOffsets`` in its end-to-end mode (BERT's split on
whitespace and punctuation, then WordPiece), both with TFLite kernels, with
each piece's byte offsets in the raw text (:meth:`BertTokenizer.tokenize_with_offsets`); the packing ``[CLS] A [SEP] B [SEP]`` is
tensorflow-text's ``RoundRobinTrimmer`` + ``combine_segments`` +
``pad_model_inputs``. ``tests/pipelines/test_bert_tokenizer.py`` checks the
ids against the package's own ``tokenizer.json`` read by Hugging Face
``tokenizers`` on corpus text.

Example::

    from layers.bert import minilm_files
    tokenizer = BertTokenizer.from_vocab_file(minilm_files() / "vocab.txt")
    inputs = tokenizer.pack(["Open the file."], sequence_length=16)
    # {"token_ids": [[101, 2330, 1996, 5371, 1012, 102, 0, ...]], "segment_ids": ..., "padding_mask": ...}
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

__all__ = ["BertTokenizer", "used_token_ids"]

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class BertTokenizer(tf.Module):
    """WordPiece over a BERT vocabulary, and the packing of one or two segments into model inputs.

    Args:
        vocab: sequence of str, the token of each id; holds ``[PAD] [UNK] [CLS] [SEP] [MASK]``.
        lower_case: bool, BERT's uncased normalization. Default True.
        max_bytes_per_word: int, longer words become ``[UNK]``. Default 100 (BERT's).

    Shapes:
        :meth:`tokenize`: strings ``(batch,)`` -> ragged int32 ``(batch, None)``.
        :meth:`pack`: strings ``(batch,)`` (and a second segment) -> dict of
        int32 ``(batch, sequence_length)``: ``token_ids``, ``segment_ids``, ``padding_mask``.
    """

    def __init__(self, vocab, lower_case=True, max_bytes_per_word=100, name=None):
        super().__init__(name=name)
        vocab = [v.decode("utf-8") if isinstance(v, bytes) else v for v in vocab]
        missing = [token for token in SPECIAL_TOKENS if token not in vocab]
        if missing:
            raise ValueError(f"a BERT vocabulary holds {list(SPECIAL_TOKENS)}; this one lacks {missing}")
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary has duplicate tokens")
        self.vocab = list(vocab)
        self.lower_case = bool(lower_case)
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = (vocab.index(t) for t in SPECIAL_TOKENS)
        # FastBertNormalize + FastWordpieceTokenizeWithOffsets in one op pair: offsets into the raw text.
        self._tokenizer = tf_text.FastBertTokenizer(
            vocab=self.vocab, suffix_indicator="##", max_bytes_per_word=max_bytes_per_word,
            token_out_type=tf.int32, unknown_token="[UNK]", support_detokenization=True,
            lower_case_nfd_strip_accents=self.lower_case,
        )

    @classmethod
    def from_vocab_file(cls, path, lower_case=True):
        """The tokenizer of a ``vocab.txt`` (one token per line); FileNotFoundError if it does not exist."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no vocabulary file at {path}")
        return cls(path.read_text(encoding="utf-8").splitlines(), lower_case=lower_case)

    @property
    def vocab_size(self):
        return len(self.vocab)

    # The roles pipelines.masking reads: [CLS] opens a sequence, [SEP] closes it (never masked).
    @property
    def start_id(self):
        return self.cls_id

    @property
    def end_id(self):
        return self.sep_id

    @property
    def special_ids(self):
        return (self.pad_id, self.cls_id, self.sep_id)

    @staticmethod
    def _strings(texts, what):
        texts = tf.convert_to_tensor(texts)
        if texts.dtype != tf.string:
            raise ValueError(f"BertTokenizer {what} must be strings, got {texts.dtype.name}")
        if texts.shape.rank == 0:
            texts = tf.reshape(texts, [1])
        if texts.shape.rank != 1:
            raise ValueError(f"BertTokenizer {what} must be a batch of strings (batch,), got shape {texts.shape}")
        return texts

    def tokenize(self, texts):
        """Strings ``(batch,)`` -> ragged int32 WordPiece ids, no ``[CLS]``/``[SEP]``."""
        return self._tokenizer.tokenize(self._strings(texts, "texts"))

    def tokenize_with_offsets(self, texts):
        """``(ids, starts, ends)``, ragged ``(batch, None)``: each piece's byte span ``[start, end)`` in the raw
        UTF-8 text (what maps a predicted answer span back to the context: extractive QA).

        ``FastBertTokenizer.tokenize_with_offsets`` in flat-value ops: its
        ragged ``gather(batch_dims=-1)`` from normalized to raw offsets becomes a
        ``RaggedRange`` op, which has no TFLite kernel; a gather on the flat
        values with each row's start gives the same offsets and converts.
        """
        texts = self._strings(texts, "texts")
        tokenizer = self._tokenizer
        normalized, offsets = tokenizer._fast_bert_normalizer.normalize_with_offsets(texts)  # noqa: SLF001
        ids, starts, ends = tokenizer._fast_wordpiece_tokenizer.tokenize_with_offsets(normalized)  # noqa: SLF001
        row_start = tf.gather(offsets.row_splits, starts.value_rowids())

        def raw(values):
            return starts.with_flat_values(tf.gather(offsets.flat_values, row_start + values.flat_values))

        return ids, raw(starts), raw(ends)

    def detokenize(self, ids):
        """Ids -> strings (the normalized words joined by spaces); pads dropped."""
        ids = tf.ragged.boolean_mask(ids, tf.not_equal(ids, self.pad_id)) if isinstance(ids, tf.Tensor) else ids
        return self._tokenizer.detokenize(ids)

    def pack(self, first, second=None, sequence_length=128):
        """``[CLS] first [SEP]`` or ``[CLS] first [SEP] second [SEP]``, trimmed round-robin and padded.

        Returns: dict of int32 ``(batch, sequence_length)``: ``token_ids``,
        ``segment_ids`` (0 for the first segment, 1 for the second) and
        ``padding_mask`` (1 for real tokens).
        """
        if not isinstance(sequence_length, int) or sequence_length < 3:
            raise ValueError(f"sequence_length must be an int of at least 3, got {sequence_length!r}")
        segments = [self.tokenize(first)]
        if second is not None:
            segments.append(self.tokenize(second))
        budget = sequence_length - 1 - len(segments)
        segments = tf_text.RoundRobinTrimmer(budget).trim(segments)
        ids, segment_ids = tf_text.combine_segments(segments, self.cls_id, self.sep_id)
        token_ids, padding_mask = tf_text.pad_model_inputs(ids, sequence_length, pad_value=self.pad_id)
        segment_ids, _ = tf_text.pad_model_inputs(tf.cast(segment_ids, tf.int32), sequence_length, pad_value=0)
        return {"token_ids": tf.cast(token_ids, tf.int32), "segment_ids": segment_ids,
                "padding_mask": tf.cast(padding_mask, tf.int32)}


def used_token_ids(tokenizer, texts, chunk=8192):
    """Sorted ids of the pieces ``tokenizer`` produces on ``texts``, plus every single character, its ``##``
    form and the special tokens (not ``[unusedN]``): the vocabulary a release needs for text like ``texts``
    (with every character kept, any other word still tokenizes, into shorter pieces).

    A smaller vocabulary tokenizes the words of ``texts`` exactly as the full one
    does: WordPiece takes the longest known prefix, and every prefix it took is kept.
    """
    vocab = tokenizer.vocab
    keep = {i for i, t in enumerate(vocab) if len(t) == 1 or (t.startswith("##") and len(t) == 3)
            or (t.startswith("[") and t.endswith("]") and not t.startswith("[unused"))}
    texts = list(texts)
    for i in range(0, len(texts), chunk):
        keep.update(np.unique(tokenizer.tokenize(tf.constant(texts[i:i + chunk])).flat_values.numpy()).tolist())
    return sorted(keep)

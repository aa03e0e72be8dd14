"""The retrieval baseline for docstring-to-code: answer with the training function whose docstring is nearest.

No model: index the training split's docstrings with BM25 (Robertson and
Zaragoza 2009, Okapi BM25), and for a query docstring return the code of the
best-scoring training function. A generator that does not beat this copies
from memory at best; the gap to it is what the model adds (the
nearest-neighbour baselines of code-generation papers, e.g. the retrieval
rows of CoNaLa and CodeSearchNet).

For a query term ``t`` occurring ``f(t, d)`` times in docstring ``d``::

    score(q, d) = sum_{t in q} idf(t) * f(t, d) (k1 + 1) / (f(t, d) + k1 (1 - b + b |d| / avgdl))

The statistics (idf with its epsilon floor for terms in more than half the
documents, document lengths, ``avgdl``) come from the maintained
``rank_bm25`` package (``BM25Okapi``); its ``get_scores`` loops in Python
over every document per query term, so the scores are computed here as one
sparse product ``Q @ W.T``: ``W[d, t]`` is the per-document factor above,
``Q[q, t]`` counts ``t`` in the query (a repeated query term counts each time,
as in ``get_scores``). The two agree to float precision (a test checks it);
5,000 training docstrings by 300 queries take milliseconds.

Tokens: lower-cased ``\\w+`` words. Ties go to the earlier training
example; a query without a known word gets the first.

Example::

    from code_tools.retrieval import CodeRetriever

    retriever = CodeRetriever.from_split("train", target="code")        # tfsuite_code, data/tfds
    test = CodeRetriever.from_split("test")
    hypotheses = retriever.retrieve(test.docstrings)
    # apps.metrics.code_bleu(hypotheses, test.targets), run_doctests(...) per hypothesis
"""

from __future__ import annotations

import re

import numpy as np
import tensorflow as tf
from scipy import sparse

__all__ = ["CodeRetriever", "GraphRetriever", "RetrievalPrompts", "TARGETS", "docstring_tokens"]

TARGETS = ("code", "body", "signature")

_WORD = re.compile(r"\w+")


def docstring_tokens(text):
    """Lower-cased ``\\w+`` words of ``text``: ``"Return the N-th item."`` -> ``["return", "the", "n", "th", "item"]``."""
    return _WORD.findall(text.lower())


class CodeRetriever:
    """BM25 over docstrings; returns the code stored with the nearest one.

    Args:
        docstrings: list of str, the training docstrings (the index).
        targets: list of str, what to return for each (the function's code, or its body).
        k1: float, term-frequency saturation. Default 1.5 (``rank_bm25``'s).
        b: float, length normalisation. Default 0.75.
        epsilon: float, idf floor for very common terms, as a fraction of the mean idf. Default 0.25.
    """

    def __init__(self, docstrings, targets, k1=1.5, b=0.75, epsilon=0.25):
        from rank_bm25 import BM25Okapi

        self.docstrings, self.targets = list(docstrings), list(targets)
        if len(self.docstrings) != len(self.targets):
            raise ValueError(f"got {len(self.docstrings)} docstrings for {len(self.targets)} targets; they must pair up")
        if not self.docstrings:
            raise ValueError("no training docstrings to index: pass at least one docstring and its code")
        corpus = [docstring_tokens(text) for text in self.docstrings]
        if not any(corpus):
            raise ValueError("the training docstrings hold no words (\\w+) to index")
        self.bm25 = BM25Okapi(corpus, k1=k1, b=b, epsilon=epsilon)
        self.vocabulary = {term: index for index, term in enumerate(self.bm25.idf)}
        self.weights = self._document_weights()

    def _document_weights(self):
        """``W[d, t] = idf(t) f(t, d) (k1 + 1) / (f(t, d) + k1 (1 - b + b |d| / avgdl))``, sparse."""
        bm25 = self.bm25
        rows, columns, frequencies = [], [], []
        for row, counts in enumerate(bm25.doc_freqs):
            rows.extend([row] * len(counts))
            columns.extend(self.vocabulary[term] for term in counts)
            frequencies.extend(counts.values())
        rows, columns = np.asarray(rows), np.asarray(columns)
        frequencies = np.asarray(frequencies, dtype=np.float64)
        idf = np.array(list(bm25.idf.values()))
        lengths = np.asarray(bm25.doc_len, dtype=np.float64)[rows]
        norm = bm25.k1 * (1 - bm25.b + bm25.b * lengths / bm25.avgdl)
        values = idf[columns] * frequencies * (bm25.k1 + 1) / (frequencies + norm)
        return sparse.csr_matrix((values, (rows, columns)), shape=(len(bm25.doc_freqs), len(self.vocabulary)))

    def _query_matrix(self, queries):
        rows, columns = [], []
        for row, text in enumerate(queries):
            known = [self.vocabulary[t] for t in docstring_tokens(text) if t in self.vocabulary]
            rows.extend([row] * len(known))
            columns.extend(known)
        counts = np.ones(len(rows))
        return sparse.csr_matrix((counts, (rows, columns)), shape=(len(queries), len(self.vocabulary)))  # duplicates add

    def scores(self, queries):
        """BM25 scores, float64 ``(len(queries), len(docstrings))``.

        Row ``i`` equals ``self.bm25.get_scores(docstring_tokens(queries[i]))``.
        """
        queries = self._queries(queries)
        return (self._query_matrix(queries) @ self.weights.T).toarray()

    def nearest(self, queries, k=1, batch_size=1024):
        """Indices of the ``k`` best training docstrings per query, best first: int ``(len(queries), k)``."""
        queries = self._queries(queries)
        if not 1 <= k <= len(self.docstrings):
            raise ValueError(f"k must be in [1, {len(self.docstrings)}] (the index size), got {k}")
        out = []
        for begin in range(0, len(queries), batch_size):
            scores = self.scores(queries[begin : begin + batch_size])
            if k == 1:
                out.append(np.argmax(scores, axis=1)[:, None])  # the first maximum: ties to the earlier example
            else:
                out.append(np.argsort(-scores, axis=1, kind="stable")[:, :k])
        return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)

    def retrieve(self, queries):
        """The target (code or body) of the nearest training docstring, one str per query."""
        return [self.targets[index] for index in self.nearest(queries, k=1)[:, 0]]

    @staticmethod
    def _queries(queries):
        if isinstance(queries, str):
            raise TypeError("queries must be a list of str, got one str: wrap it in a list")
        return list(queries)

    @classmethod
    def from_examples(cls, examples, target="code", **kwargs):
        """Index ``tfsuite_code``-style dicts (``docstring`` plus ``code`` / ``body`` / ``signature``).

        Args:
            examples: iterable of dicts, e.g. ``pipelines.corpora.code.collect_functions()``.
            target: str, the field to return: ``"code"`` (signature + body, default),
                ``"body"`` (to put under the query's own signature) or ``"signature"``.
            **kwargs: BM25 parameters (``k1``, ``b``, ``epsilon``).
        """
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        examples = list(examples)
        return cls([e["docstring"] for e in examples], [e[target] for e in examples], **kwargs)

    @classmethod
    def from_split(cls, split="train", target="code", data_dir=None, **kwargs):
        """Index a split of the built ``tfsuite_code`` corpus (``tfsuite data build tfsuite_code``).

        ``data_dir`` defaults to ``data/tfds`` (or ``$TFSUITE_DATA_DIR``). The
        retriever's ``docstrings`` / ``targets`` also serve as a test split's
        queries and references.
        """
        from pipelines import tfds_sources

        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        columns = tfds_sources.load_columns(
            "code", split=split, data_dir=data_dir, fields={"prompt": "docstring", "code": target})
        return cls(columns["prompt"], columns["code"], **kwargs)


class GraphRetriever(tf.Module):
    """:meth:`CodeRetriever.nearest` (k=1) as TensorFlow ops, for a SavedModel: query strings -> stored strings.

    The BM25 weights are stored per term as a ragged ``(terms, [documents])``
    table (``W.T`` of :class:`CodeRetriever` in CSR form); a query's words are
    looked up in a static hash table, their rows gathered and summed per
    document (``unsorted_segment_sum``), and the first best document's string
    returned. Tokens as :func:`docstring_tokens`: lower-cased words, with RE2's
    ``[\\p{L}\\p{N}_]+`` for Python's ``\\w+`` (the same on ASCII text; a
    few Unicode marks and numerals differ).

    Args:
        retriever: a :class:`CodeRetriever` (its index and weights).
        values: list of str, what to return for each indexed document
            (default: the retriever's targets).
    """

    def __init__(self, retriever, values=None, name="graph_retriever"):
        super().__init__(name=name)
        values = list(retriever.targets if values is None else values)
        if len(values) != len(retriever.docstrings):
            raise ValueError(f"got {len(values)} values for {len(retriever.docstrings)} indexed documents")
        by_term = retriever.weights.T.tocsr()
        terms = sorted(retriever.vocabulary, key=retriever.vocabulary.get)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(terms), tf.range(len(terms), dtype=tf.int64)), -1)
        self.row_splits = tf.constant(by_term.indptr, tf.int64)
        self.documents = tf.constant(by_term.indices, tf.int32)
        self.weights = tf.constant(by_term.data, tf.float64)
        self.values = tf.constant(values)
        self.size = len(values)

    def nearest(self, queries):
        """Index of the best document per query, int32 ``(batch,)``; ties and word-less queries go to the earlier one."""
        queries = tf.ensure_shape(tf.convert_to_tensor(queries, tf.string), [None])
        words = tf.strings.split(tf.strings.regex_replace(tf.strings.lower(queries, encoding="utf-8"),
                                                          r"[^\p{L}\p{N}_]+", " "))
        ids = tf.ragged.map_flat_values(self.table.lookup, words)
        ids = tf.ragged.boolean_mask(ids, ids >= 0)
        rows = tf.RaggedTensor.from_row_splits(tf.range(tf.shape(self.documents)[0], dtype=tf.int64), self.row_splits)
        # Every (query, document, weight) of the query's words: entries of the gathered term rows.
        entries = tf.gather(rows, ids.flat_values)  # (query words, [entries])
        query_of = tf.repeat(ids.value_rowids(), entries.row_lengths())
        flat = entries.flat_values
        segment = tf.cast(query_of, tf.int32) * self.size + tf.gather(self.documents, flat)
        batch = tf.shape(queries)[0]
        scores = tf.math.unsorted_segment_sum(tf.gather(self.weights, flat), segment, batch * self.size)
        scores = tf.reshape(scores, [batch, self.size])
        best = tf.reduce_max(scores, axis=1, keepdims=True)
        first = tf.where(scores >= best, tf.range(self.size)[None], self.size)  # the first maximum
        return tf.reduce_min(first, axis=1)

    def __call__(self, queries):
        """The stored string of each query's nearest document, ``(batch,)``."""
        return tf.gather(self.values, self.nearest(queries))


class RetrievalPrompts(tf.Module):
    """Retrieval-augmented prompts: the nearest indexed example written before each prompt, when both fit.

    In-context examples chosen by similarity to the query (Liu et al., 2022,
    "What Makes Good In-Context Examples for GPT-3?"; for code, REDCODER and
    ReACC): the model reads a similar training function and writes the body
    of the asked one. The same rule in Python (:meth:`compose`, training and
    evaluation) and in the graph (``__call__``, the SavedModel): a non-blank
    prompt becomes ``example + prompt`` when the two hold at most
    ``max_bytes`` UTF-8 bytes together, else it stays as it is.

    Args:
        keys: list of str, what a prompt is matched against (BM25), one per example.
        examples: list of str, the text written before a prompt whose nearest key is the same row.
        max_bytes: int, the longest composed prompt.
    """

    def __init__(self, keys, examples, max_bytes, name="retrieval_prompts"):
        super().__init__(name=name)
        self.retriever = CodeRetriever(keys, examples)
        self.examples = list(examples)
        self.max_bytes = int(max_bytes)
        self.graph = GraphRetriever(self.retriever)

    def compose(self, prompts, exclude=None):
        """Python: the composed prompts; ``exclude[i]`` is an example row prompt ``i`` may not use (its own)."""
        prompts = list(prompts)
        ranked = self.retriever.nearest(prompts, k=2 if exclude is not None else 1)
        out = []
        for i, prompt in enumerate(prompts):
            row = ranked[i, 1] if exclude is not None and ranked[i, 0] == exclude[i] else ranked[i, 0]
            example = self.examples[row]
            fits = len(example.encode()) + len(prompt.encode()) <= self.max_bytes
            out.append(example + prompt if prompt.strip() and fits else prompt)
        return out

    def __call__(self, prompts):
        """The graph's :meth:`compose` (without ``exclude``) on a string batch."""
        prompts = tf.convert_to_tensor(prompts, tf.string)
        example = self.graph(prompts)
        fits = tf.strings.length(example) + tf.strings.length(prompts) <= self.max_bytes
        blank = tf.equal(tf.strings.strip(prompts), "")
        return tf.where(fits & ~blank, tf.strings.join([example, prompts]), prompts)

"""``tfsuite_summarization``: Debian long package description to its one-line synopsis.

TFDS dataset builder for the summarization app (textbook 6.3 T5 and chapter
10). Source: the English Debian package descriptions
(:mod:`pipelines.corpora.debian_descriptions`, ``Translation-en``). The
document is the long description (paragraphs separated by a blank line), the
summary its synopsis, a human-written headline of about six words, often
abstractive (many summary words are not in the document).

Filters: document 30 to 300 words, summary 3 to 15 words; deduplicated by
the summary and by the document (:func:`pipelines.corpora.splits.dedup_key`),
first package in name order wins. Split by Debian *source package*, 90/5/5,
so binary packages built from one source never straddle splits.

Features::

    document     Text   the long description
    summary      Text   the synopsis
    package      Text   the binary package name
    source_item  Text   the split key, "debian:<source package>"

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.summarization  # registers the builder

    ds = tfds.load("tfsuite_summarization", split="validation", data_dir="data/tfds",
                   as_supervised=True)       # (document, summary)
"""

from __future__ import annotations

import logging

import tensorflow_datasets as tfds

from pipelines.corpora import debian_descriptions
from pipelines.corpora.splits import SPLITS, Deduplicator, assign_split, dedup_key

__all__ = ["TfsuiteSummarization", "collect_pairs", "DOCUMENT_WORDS", "SUMMARY_WORDS"]

log = logging.getLogger(__name__)

DOCUMENT_WORDS = (30, 300)
SUMMARY_WORDS = (3, 15)


def collect_pairs(directory=None, fetch=True):
    """Return the filtered, deduplicated (document, summary) dicts with a ``split`` key."""
    english = debian_descriptions.load("en", directory, fetch)
    source_of = debian_descriptions.source_packages(directory)
    summaries, documents = Deduplicator(), Deduplicator()
    pairs = []
    for description in sorted(english.values(), key=lambda d: (d.packages[0], d.md5)):
        document, summary = description.text, description.synopsis
        if not DOCUMENT_WORDS[0] <= len(document.split()) <= DOCUMENT_WORDS[1]:
            continue
        if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
            continue
        # Check both before recording either, so a rejected pair does not block a later one.
        if dedup_key(summary) in summaries.seen or dedup_key(document) in documents.seen:
            continue
        summaries.add(summary)
        documents.add(document)
        package = description.packages[0]
        item = f"debian:{source_of.get(package, package)}"
        pairs.append(dict(document=document, summary=summary, package=package, source_item=item, split=assign_split(item)))
    log.info("summarization: %d pairs from %d English descriptions", len(pairs), len(english))
    return pairs


class TfsuiteSummarization(tfds.core.GeneratorBasedBuilder):
    """Debian long description to synopsis."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Debian bookworm English descriptions (main, -updates, -security)."}

    def __init__(self, *, raw_dir=None, fetch=True, **kwargs):
        """``raw_dir``, ``fetch``: see :func:`collect_pairs`; the rest goes to TFDS."""
        self._raw_dir, self._fetch = raw_dir, fetch
        super().__init__(**kwargs)

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Features::")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    "document": tfds.features.Text(),
                    "summary": tfds.features.Text(),
                    "package": tfds.features.Text(),
                    "source_item": tfds.features.Text(),
                }
            ),
            supervised_keys=("document", "summary"),
            homepage="https://www.debian.org/distrib/packages",
            license="per-package licences of the Debian packages described",
        )

    def _split_generators(self, dl_manager):
        pairs = collect_pairs(self._raw_dir, self._fetch)
        return {split: self._generate_examples([p for p in pairs if p["split"] == split]) for split in SPLITS}

    def _generate_examples(self, pairs):
        for pair in pairs:
            yield dedup_key(pair["summary"]), {key: pair[key] for key in ("document", "summary", "package", "source_item")}

"""Train/validation/test assignment by source item, and deduplication keys.

Every corpus assigns a split to a *source item* (a Debian package, an
English source string, a function's qualified name, an emoji set, a story,
a voice), never to a line after duplication, so no item leaks across splits.
The split of a key is a pure function of the key (a SHA-1 bucket), so it is
stable across machines, runs and corpus growth.

Near-duplicates ("Open file 1", "Open file 2"; the same text with other
capitalisation or punctuation) collapse to one :func:`dedup_key`.

Example::

    from pipelines.corpora.splits import assign_split, dedup_key

    assign_split("python3-numpy")       # 'train' (about 90 % of keys)
    dedup_key("Open File #2 ...")        # 'open file 0'
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

__all__ = ["SPLITS", "DEFAULT_FRACTIONS", "assign_split", "dedup_key", "stable_hash", "Deduplicator"]

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)
_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_DIGITS = re.compile(r"\d+")


def stable_hash(key, salt=""):
    """A float in ``[0, 1)`` from SHA-1 of ``salt + key``; the same on every machine and run."""
    digest = hashlib.sha1(f"{salt}{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def assign_split(key, fractions=DEFAULT_FRACTIONS, salt="tfsuite"):
    """Return ``'train'``, ``'validation'`` or ``'test'`` for source item ``key``.

    Args:
        key: str, the source item (package name, English source, qualified name, ...).
        fractions: tuple of three floats summing to 1, default ``(0.9, 0.05, 0.05)``.
        salt: str, default ``"tfsuite"``; another salt draws another partition.
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9 or min(fractions) < 0:
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    u = stable_hash(key, salt)
    if u < fractions[0]:
        return "train"
    if u < fractions[0] + fractions[1]:
        return "validation"
    return "test"


def dedup_key(text):
    """Normalise ``text`` for near-duplicate detection.

    NFKC, case-folded, every run of digits replaced by ``0``, every run of
    punctuation, symbols and whitespace replaced by one space.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DIGITS.sub("0", text)
    return _NON_WORD.sub(" ", text).strip()


class Deduplicator:
    """Remembers the keys seen so far; ``add(text)`` is True the first time a key is seen.

    Args:
        key_fn: callable ``str -> hashable``, default :func:`dedup_key`.
    """

    def __init__(self, key_fn=dedup_key):
        self.key_fn = key_fn
        self.seen = set()
        self.dropped = 0

    def add(self, text):
        key = self.key_fn(text)
        if key in self.seen:
            self.dropped += 1
            return False
        self.seen.add(key)
        return True

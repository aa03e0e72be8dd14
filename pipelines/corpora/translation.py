"""``tfsuite_translation``: English to German / Japanese sentence pairs from Debian and gettext.

TFDS dataset builder (configs ``en_de`` and ``en_ja``) for the translation app
(textbook chapters 5 and 10). Offline sources, all software/UI domain:

1. Debian package descriptions (:mod:`pipelines.corpora.debian_descriptions`):
   the English and translated records share ``Description-md5``; the
   synopses give one pair each, and descriptions with the same number of
   paragraphs on both sides give one pair per paragraph.
2. The gettext catalogues installed on this machine,
   ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo`` (msgid to msgstr).
3. The LibreOffice catalogues of ``libreoffice-l10n-<lang>``, downloaded and
   unpacked (not installed) under ``<raw>/debs``.

Cleaning: accelerator marks stripped, 2 to 40 words for catalogue strings and
2 to 120 words for description paragraphs, no placeholders or markup, a
plausible length ratio, untranslated strings dropped. Deduplicated by the
English side (:func:`pipelines.corpora.splits.dedup_key`: case, digits and
punctuation folded), first source wins in the order above. Split by source
item, 90/5/5: the Debian *source package* for description pairs (so ``0ad``
and ``0ad-data`` land together), the normalised English string for catalogue
pairs.

Features::

    en           Text   English source
    de | ja      Text   translation (the config's language)
    source       Text   debian-synopsis | debian-paragraph | gettext | libreoffice
    source_item  Text   the split key ("debian:<source package>" or "catalog:<english key>")

Example::

    import tensorflow_datasets as tfds
    import pipelines.corpora.translation  # registers the builder

    ds = tfds.load("tfsuite_translation/en_de", split="train", data_dir="data/tfds")
    for ex in ds.take(1):
        print(ex["en"].numpy().decode(), "->", ex["de"].numpy().decode())
"""

from __future__ import annotations

import dataclasses
import logging

import tensorflow_datasets as tfds

from pipelines.corpora import debian_descriptions, gettext_catalogs
from pipelines.corpora.splits import SPLITS, Deduplicator, assign_split, dedup_key

__all__ = ["TfsuiteTranslation", "TranslationConfig", "collect_pairs"]

log = logging.getLogger(__name__)

# Target/English character-length ratios outside these bounds are misalignments.
_LENGTH_RATIO = {"de": (0.5, 2.5), "ja": (0.12, 1.5)}
MAX_PARAGRAPH_WORDS = 120


@dataclasses.dataclass
class TranslationConfig(tfds.core.BuilderConfig):
    """``language``: the target language code (``"de"`` or ``"ja"``)."""

    language: str = "de"


def _plausible(english, target, language, max_words):
    words = len(english.split())
    if not 2 <= words <= max_words or not target.strip() or english.strip() == target.strip():
        return False
    low, high = _LENGTH_RATIO[language]
    return low <= len(target) / len(english) <= high


def collect_pairs(language, directory=None, catalogs=None, fetch=True):
    """Return the deduplicated pairs as dicts with the builder's features plus ``split``.

    Args:
        language: str, ``"de"`` or ``"ja"``.
        directory: raw dir (default ``<repo>/data/raw``).
        catalogs: list of ``.mo`` paths, or None for the installed catalogues
            followed by the LibreOffice ones (downloaded on first use).
        fetch: bool, default ``True``: fetch the apt lists when absent.
    """
    if language not in _LENGTH_RATIO:
        raise ValueError(f"language must be one of {sorted(_LENGTH_RATIO)}, got {language!r}")
    english = debian_descriptions.load("en", directory, fetch)
    target = debian_descriptions.load(language, directory, fetch)
    source_of = debian_descriptions.source_packages(directory)
    dedup = Deduplicator()
    pairs = []

    def add(en, tgt, source, item):
        if dedup.add(en):
            pairs.append(dict(en=en, tgt=tgt, source=source, source_item=item, split=assign_split(item)))

    aligned = sorted((md5 for md5 in target if md5 in english), key=lambda m: (english[m].packages[0], m))
    for md5 in aligned:
        en, tgt = english[md5], target[md5]
        package = en.packages[0]
        item = f"debian:{source_of.get(package, package)}"
        if _plausible(en.synopsis, tgt.synopsis, language, 40):
            add(en.synopsis, tgt.synopsis, "debian-synopsis", item)
        if len(en.paragraphs) == len(tgt.paragraphs):
            for en_par, tgt_par in zip(en.paragraphs, tgt.paragraphs):
                if _plausible(en_par, tgt_par, language, MAX_PARAGRAPH_WORDS):
                    add(en_par, tgt_par, "debian-paragraph", item)
    if catalogs is None:
        groups = [
            ("gettext", gettext_catalogs.system_catalogs(language)),
            ("libreoffice", gettext_catalogs.libreoffice_catalogs(language, directory)),
        ]
    else:
        groups = [("gettext", list(catalogs))]
    for source, files in groups:
        for en, tgt in gettext_catalogs.usable_pairs(files):
            if _plausible(en, tgt, language, 40):
                add(en, tgt, source, f"catalog:{dedup_key(en)}")
    log.info("translation en-%s: %d unique pairs, %d duplicates dropped", language, len(pairs), dedup.dropped)
    return pairs


class TfsuiteTranslation(tfds.core.GeneratorBasedBuilder):
    """English to German / Japanese pairs from Debian descriptions and gettext catalogues."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Debian descriptions (bookworm), installed gettext and LibreOffice 7.4 catalogues."}
    BUILDER_CONFIGS = [
        TranslationConfig(name="en_de", language="de", description="English to German"),
        TranslationConfig(name="en_ja", language="ja", description="English to Japanese"),
    ]

    def __init__(self, *, raw_dir=None, catalogs=None, fetch=True, **kwargs):
        """``raw_dir``, ``catalogs``, ``fetch``: see :func:`collect_pairs`; the rest goes to TFDS."""
        self._raw_dir, self._catalogs, self._fetch = raw_dir, catalogs, fetch
        super().__init__(**kwargs)

    def _info(self):
        language = self.builder_config.language
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__.split("Features::")[0].strip(),
            features=tfds.features.FeaturesDict(
                {
                    "en": tfds.features.Text(),
                    language: tfds.features.Text(),
                    "source": tfds.features.Text(),
                    "source_item": tfds.features.Text(),
                }
            ),
            supervised_keys=("en", language),
            homepage="https://www.debian.org/international/l10n/ddtp",
            license="Debian descriptions: per-package licences (DDTP); catalogues: their packages' licences (GPL/LGPL/MPL)",
        )

    def _split_generators(self, dl_manager):
        language = self.builder_config.language
        pairs = collect_pairs(language, self._raw_dir, self._catalogs, self._fetch)
        return {split: self._generate_examples([p for p in pairs if p["split"] == split], language) for split in SPLITS}

    def _generate_examples(self, pairs, language):
        for pair in pairs:
            yield dedup_key(pair["en"]), {
                "en": pair["en"],
                language: pair["tgt"],
                "source": pair["source"],
                "source_item": pair["source_item"],
            }

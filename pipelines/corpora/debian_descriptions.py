"""Debian package descriptions in English, German and Japanese (the apt ``Translation-*`` files).

Source reader shared by ``tfsuite_translation`` (English to German/Japanese
descriptions), ``tfsuite_summarization`` (long description to synopsis),
``tfsuite_qa`` ("X is a ..." definitions) and ``tfsuite_speech`` (short
synopses as utterances).

The files are fetched by :func:`pipelines.corpora.apt_archive.update_lists`
into ``<raw>/apt-lists`` and read with ``lz4 -dc`` (Debian package ``lz4``).
Each record is a deb822 stanza::

    Package: 0ad
    Description-md5: d943033bedada21853d2ae54a2578a7b
    Description-de: Echtzeit-Strategiespiel ...        <- synopsis (one line)
     0 A.D. ist ein freies, quelloffenes, ...           <- long description, folded
     .                                                  <- paragraph break
       * verbatim line (two or more leading spaces)

``Description-md5`` is the MD5 of the original English description, so it is
the key that aligns an English record with its translations.

Example::

    from pipelines.corpora import debian_descriptions

    english = debian_descriptions.load("en")            # {md5: Description}
    german = debian_descriptions.load("de")
    d = english["d943033bedada21853d2ae54a2578a7b"]
    d.packages, d.synopsis, d.paragraphs[0][:40]
"""

from __future__ import annotations

import dataclasses
import re

from pipelines.corpora import apt_archive
from pipelines.corpora.sources import MissingSourceError, run

__all__ = ["Description", "parse", "read_file", "load", "source_packages"]

_FIELD = re.compile(r"^([A-Za-z0-9-]+):\s?(.*)$")


@dataclasses.dataclass(frozen=True)
class Description:
    """One package description in one language.

    Attributes:
        md5: str, ``Description-md5`` (MD5 of the English original).
        packages: tuple of str, the packages sharing this description, in file order.
        synopsis: str, the one-line short description.
        paragraphs: tuple of str, the long description's paragraphs; folded
            lines are joined by spaces, verbatim lines (lists, code) by newlines.
    """

    md5: str
    packages: tuple
    synopsis: str
    paragraphs: tuple

    @property
    def text(self):
        """The long description, paragraphs separated by a blank line."""
        return "\n\n".join(self.paragraphs)


def _paragraphs(lines):
    """Fold deb822 continuation lines (leading space already stripped once) into paragraphs."""
    paragraphs, current = [], []
    for line in lines:
        if line.strip() == ".":
            if current:
                paragraphs.append(current)
            current = []
        elif line.startswith(" "):
            current.append(("verbatim", line.strip()))
        else:
            current.append(("folded", line.strip()))
    if current:
        paragraphs.append(current)
    out = []
    for paragraph in paragraphs:
        text, previous = "", None
        for kind, line in paragraph:
            if not line:
                continue
            if text:
                text += " " if kind == previous == "folded" else "\n"
            text += line
            previous = kind
        if text:
            out.append(text)
    return tuple(out)


def parse(text, language):
    """Yield ``(package, md5, synopsis, paragraphs)`` for each stanza of a Translation file's text."""
    description_field = f"Description-{language}"
    for stanza in re.split(r"\n\s*\n", text):
        fields, long_lines, in_description = {}, [], False
        for line in stanza.split("\n"):
            if line.startswith(" ") and in_description:
                long_lines.append(line[1:])
                continue
            match = _FIELD.match(line)
            if match is None:
                in_description = False
                continue
            name, value = match.groups()
            fields[name] = value
            in_description = name == description_field
        if "Package" in fields and "Description-md5" in fields and description_field in fields:
            yield fields["Package"], fields["Description-md5"], fields[description_field].strip(), _paragraphs(long_lines)


def read_file(path, language):
    """Decompress one ``Translation-<language>.lz4`` file with ``lz4`` and parse it."""
    text = run(["lz4", "-dc", str(path)], package="lz4").decode("utf-8", "replace")
    return parse(text, language)


def load(language, directory=None, fetch=True):
    """Return ``{md5: Description}`` for ``language`` from every Translation file in the private lists.

    Args:
        language: str, ``"en"``, ``"de"`` or ``"ja"``.
        directory: raw dir (default :func:`pipelines.corpora.sources.raw_dir`).
        fetch: bool, default ``True``: run ``apt-get update`` into the private
            lists when the files are not there yet.
    """
    if fetch:
        apt_archive.update_lists(directory)
    files = apt_archive.translation_files(language, directory)
    if not files:
        raise MissingSourceError(
            f"no *_i18n_Translation-{language}.lz4 in {apt_archive.lists_dir(directory)}: run "
            "`python -m pipelines.corpora.build` with network access to the Debian mirror, "
            "or copy the apt lists there"
        )
    records, packages = {}, {}
    for path in files:
        for package, md5, synopsis, paragraphs in read_file(path, language):
            packages.setdefault(md5, []).append(package)
            if md5 not in records:
                records[md5] = (synopsis, paragraphs)
    return {
        md5: Description(md5, tuple(dict.fromkeys(packages[md5])), synopsis, paragraphs)
        for md5, (synopsis, paragraphs) in records.items()
    }


def source_packages(directory=None):
    """Return ``{binary package: source package}`` from the ``Packages`` files in the private lists.

    Binary packages built from one source (``0ad``, ``0ad-data``,
    ``0ad-data-common``) share most of their description, so the corpora split
    by source package. A package without a ``Source:`` field is its own source;
    an empty dict comes back when no ``Packages`` file is there (tiny test lists).
    """
    mapping = {}
    for path in sorted(apt_archive.lists_dir(directory).glob("*_binary-*_Packages.lz4")):
        text = run(["lz4", "-dc", str(path)], package="lz4").decode("utf-8", "replace")
        package = None
        for line in text.split("\n"):
            if line.startswith("Package: "):
                package = line[9:].strip()
                mapping.setdefault(package, package)
            elif line.startswith("Source: ") and package is not None:
                mapping[package] = line[8:].split()[0]
            elif not line.strip():
                package = None
    return mapping

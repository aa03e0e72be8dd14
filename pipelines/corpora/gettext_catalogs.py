"""Translated user-interface strings from gettext ``.mo`` catalogues.

Source reader for ``tfsuite_translation``. Two offline sources:

* the catalogues installed on this machine, ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``
  (from whichever Debian packages are installed: coreutils, apt, dpkg, bash, ...);
* the LibreOffice catalogues in ``libreoffice-l10n-<lang>`` (fetched with
  ``apt-get download`` and unpacked, not installed, by
  :func:`pipelines.corpora.apt_archive.unpack_package`).

A ``.mo`` file maps an English ``msgid`` to its translation ``msgstr``.
:func:`usable_pairs` keeps the pairs a translation model can learn from:
2 to 40 English words, no printf/format placeholders or markup, translated
(msgstr differs from msgid), with keyboard accelerator marks removed
(``&File``, ``~Open``, ``_Save``, and ``ファイル(_F)`` on the Japanese side).

Example::

    from pipelines.corpora import gettext_catalogs

    pairs = gettext_catalogs.usable_pairs(gettext_catalogs.system_catalogs("de"))
    pairs[0]   # ('Print version information and exit', 'Versionsinformation anzeigen und beenden')
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

from pipelines.corpora import apt_archive

__all__ = [
    "read_mo",
    "strip_accelerators",
    "is_usable",
    "usable_pairs",
    "system_catalogs",
    "libreoffice_catalogs",
    "SYSTEM_LOCALE_DIR",
]

SYSTEM_LOCALE_DIR = Path("/usr/share/locale")
_MO_MAGIC = {0x950412DE: "<", 0xDE120495: ">"}
# printf (%s, %1$d, %%), Python/ICU ({0}, {name}), shell ($1, ${x}), Qt/LibreOffice (%1, $(ARG1)), markup.
_PLACEHOLDER = re.compile(r"%[-+ #0-9.$]*[a-zA-Z%]|%\d|\{[^}]*\}|\$\(?\w|<[^>]+>|&\w+;|\\[ntr]|[\x00-\x1f]")
_ASCII_ACCEL = re.compile(r"[&~_](?=\w)")
_CJK_ACCEL = re.compile(r"\s*[(（][&~_]?[A-Za-z0-9][)）]")


def read_mo(path):
    """Return ``[(msgid, msgstr), ...]`` from a GNU ``.mo`` file.

    Plural entries keep their singular forms; ``msgctxt`` prefixes are dropped;
    the header entry (empty msgid) is skipped. Strings are decoded with the
    catalogue's declared charset (UTF-8 when absent).
    """
    data = Path(path).read_bytes()
    if len(data) < 20:
        return []
    order = _MO_MAGIC.get(struct.unpack("<I", data[:4])[0])
    if order is None:
        raise ValueError(f"{path} is not a gettext .mo file (bad magic number)")
    _, count, originals, translations = struct.unpack(order + "4I", data[4:20])

    def entry(table, i):
        length, offset = struct.unpack(order + "2I", data[table + 8 * i : table + 8 * i + 8])
        return data[offset : offset + length]

    raw = [(entry(originals, i), entry(translations, i)) for i in range(count)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            match = re.search(rb"charset=([\w-]+)", msgstr)
            if match and match.group(1).lower() not in (b"charset", b""):
                charset = match.group(1).decode("ascii")
    pairs = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue
        msgid = msgid.split(b"\x04", 1)[-1].split(b"\x00", 1)[0]
        msgstr = msgstr.split(b"\x00", 1)[0]
        try:
            pairs.append((msgid.decode(charset), msgstr.decode(charset)))
        except (LookupError, UnicodeDecodeError):
            continue
    return pairs


def strip_accelerators(text):
    """Remove keyboard accelerator marks: ``&File`` / ``~Open`` / ``_Save`` and ``開く(_O)``."""
    text = _CJK_ACCEL.sub("", text)
    text = text.replace("&&", "\x00")
    text = _ASCII_ACCEL.sub("", text)
    return text.replace("\x00", "&").strip()


def is_usable(source, target, min_words=2, max_words=40):
    """True when ``(source, target)`` is a clean sentence pair (see the module docstring)."""
    words = source.split()
    if not min_words <= len(words) <= max_words or not target.strip():
        return False
    if source.strip() == target.strip():
        return False
    if _PLACEHOLDER.search(source) or _PLACEHOLDER.search(target):
        return False
    # The English side must be prose, not a path, an identifier list or a command line.
    letters = sum(c.isalpha() for c in source)
    return letters >= 0.6 * len(source.replace(" ", "")) and not re.search(r"[/=|]|--|\w\.\w", source)


def usable_pairs(catalogs, min_words=2, max_words=40):
    """Cleaned ``(english, translation)`` pairs from ``.mo`` files, in file order (duplicates kept)."""
    out = []
    for path in catalogs:
        for msgid, msgstr in read_mo(path):
            source, target = strip_accelerators(msgid), strip_accelerators(msgstr)
            source, target = " ".join(source.split()), " ".join(target.split())
            if is_usable(source, target, min_words, max_words):
                out.append((source, target))
    return out


def system_catalogs(language, locale_dir=SYSTEM_LOCALE_DIR):
    """The installed ``<locale_dir>/<language>/LC_MESSAGES/*.mo`` files, sorted."""
    return sorted((Path(locale_dir) / language / "LC_MESSAGES").glob("*.mo"))


def libreoffice_catalogs(language, directory=None):
    """The ``.mo`` files of ``libreoffice-l10n-<language>``, downloaded and unpacked under the raw dir."""
    tree = apt_archive.unpack_package(f"libreoffice-l10n-{language}", directory)
    return sorted(tree.glob(f"usr/lib/libreoffice/program/resource/{language}/LC_MESSAGES/*.mo"))

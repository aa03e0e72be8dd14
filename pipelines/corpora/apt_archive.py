"""Private apt lists and ``.deb`` downloads under the raw dir.

The system apt is set to skip translation files (``Acquire::Languages
"none"``), so the Debian package descriptions in English, German and
Japanese are fetched into a private lists folder, ``<raw>/apt-lists``, with
a private cache, ``<raw>/apt-cache``; the system's own lists and package
cache are left untouched. Binary packages that only carry data (for example
``libreoffice-l10n-de``) are fetched with ``apt-get download`` through the
same private lists and unpacked with ``dpkg-deb -x`` into
``<raw>/debs/<package>/``; nothing is installed.

Example::

    from pipelines.corpora import apt_archive

    lists = apt_archive.update_lists()                  # <repo>/data/raw/apt-lists
    tree = apt_archive.unpack_package("libreoffice-l10n-de")
"""

from __future__ import annotations

import os
from pathlib import Path

from pipelines.corpora.sources import raw_dir, require_program, run

__all__ = ["LANGUAGES", "lists_dir", "translation_files", "update_lists", "unpack_package"]

LANGUAGES = ("en", "de", "ja")


def lists_dir(directory=None):
    """``<raw>/apt-lists``, the private apt lists folder."""
    return raw_dir(directory) / "apt-lists"


def _apt_options(directory):
    lists = lists_dir(directory)
    cache = raw_dir(directory) / "apt-cache"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    (cache / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    options = [
        "-q",
        "-o", f"Dir::State::Lists={lists}",
        "-o", f"Dir::Cache={cache}",
        # The unprivileged _apt sandbox user cannot write into a root-owned repo checkout.
        "-o", "APT::Sandbox::User=root" if os.geteuid() == 0 else "APT::Sandbox::User=_apt",
    ]
    return options


def translation_files(language, directory=None):
    """The ``*_i18n_Translation-<language>.lz4`` files in the private lists (main suite first)."""
    files = sorted(lists_dir(directory).glob(f"*_i18n_Translation-{language}.lz4"))
    # The release suite carries nearly every description; -updates and -security add revisions.
    return sorted(files, key=lambda p: ("-updates_" in p.name or "-security_" in p.name, p.name))


def update_lists(directory=None, languages=LANGUAGES, force=False):
    """Fetch the apt lists with ``Translation-<lang>`` files for ``languages``; return the lists dir.

    Skipped when a ``Translation-<lang>`` file is already there for every
    language (pass ``force=True`` to refresh).
    """
    lists = lists_dir(directory)
    if not force and all(translation_files(lang, directory) for lang in languages):
        return lists
    require_program("apt-get", "apt")
    require_program("lz4", "lz4")
    command = ["apt-get", *_apt_options(directory), "-o", "Acquire::Languages="]
    for lang in languages:
        command += ["-o", f"Acquire::Languages::={lang}"]
    run([*command, "update"])
    missing = [lang for lang in languages if not translation_files(lang, directory)]
    if missing:
        raise RuntimeError(
            f"apt-get update wrote no Translation-{'/'.join(missing)} files into {lists}; "
            "check that /etc/apt/sources.list(.d) names a Debian mirror with the main component"
        )
    return lists


def unpack_package(package, directory=None):
    """``apt-get download`` ``package`` and ``dpkg-deb -x`` it into ``<raw>/debs/<package>/``.

    Returns the unpacked tree; skipped when it already exists.
    """
    target = raw_dir(directory) / "debs" / package
    if target.is_dir() and any(target.iterdir()):
        return target
    require_program("dpkg-deb", "dpkg")
    update_lists(directory)
    downloads = raw_dir(directory) / "debs"
    downloads.mkdir(parents=True, exist_ok=True)
    before = set(downloads.glob(f"{package}_*.deb"))
    # apt-get download writes into the working directory.
    run(["apt-get", *_apt_options(directory), "download", package], cwd=downloads)
    debs = sorted(set(downloads.glob(f"{package}_*.deb")) | before)
    if not debs:
        raise RuntimeError(f"apt-get download {package} wrote no .deb into {downloads}")
    tmp = Path(f"{target}.partial")
    tmp.mkdir(parents=True, exist_ok=True)
    run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)])
    tmp.rename(target)
    return target

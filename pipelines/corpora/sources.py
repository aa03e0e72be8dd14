"""Where the offline corpora live, and how a missing source is reported.

Two folders, both under the git-ignored ``<repo>/data``:

* the TFDS data dir (prepared datasets), default ``<repo>/data/tfds``,
  overridden by ``$TFSUITE_DATA_DIR``;
* the raw dir (apt lists, downloaded ``.deb`` files, unpacked trees),
  default ``<repo>/data/raw``, overridden by ``$TFSUITE_RAW_DIR``.

Every corpus reads Debian-packaged sources. When one is absent the builders
raise :class:`MissingSourceError`, whose message names the file or program
that is missing and the Debian package to install (``make setup`` installs
them all when run as root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = [
    "DATA_DIR_ENV",
    "RAW_DIR_ENV",
    "MissingSourceError",
    "data_dir",
    "raw_dir",
    "require_file",
    "require_program",
    "run",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR_ENV = "TFSUITE_DATA_DIR"
RAW_DIR_ENV = "TFSUITE_RAW_DIR"


class MissingSourceError(FileNotFoundError):
    """A file or program a corpus is built from is not on this machine."""


def data_dir(directory=None):
    """The TFDS data dir: the argument, else ``$TFSUITE_DATA_DIR``, else ``<repo>/data/tfds``."""
    return Path(directory or os.environ.get(DATA_DIR_ENV) or REPO_ROOT / "data" / "tfds")


def raw_dir(directory=None):
    """The raw-source dir: the argument, else ``$TFSUITE_RAW_DIR``, else ``<repo>/data/raw``."""
    return Path(directory or os.environ.get(RAW_DIR_ENV) or REPO_ROOT / "data" / "raw")


def _install_hint(package):
    return (
        f"install the Debian package `{package}` "
        f"(`sudo apt-get install --no-install-recommends {package}`; `make setup` does it when run as root)"
    )


def require_file(path, package, what=None):
    """Return ``Path(path)`` if it is a file, else raise :class:`MissingSourceError` naming ``package``."""
    path = Path(path)
    if not path.is_file():
        label = f"{what} " if what else ""
        raise MissingSourceError(f"{label}{path} not found: {_install_hint(package)}")
    return path


def require_program(program, package):
    """Return the full path of ``program`` on ``$PATH``, else raise :class:`MissingSourceError`."""
    found = shutil.which(program)
    if found is None:
        raise MissingSourceError(f"program `{program}` not found on PATH: {_install_hint(package)}")
    return found


def run(command, *, input=None, package=None, timeout=600, cwd=None):
    """Run ``command`` (a list), return its stdout bytes; a failure names the command and its stderr.

    ``package`` is the Debian package providing ``command[0]``; it is checked
    first so that a missing program reads as a missing source, not as an
    ``OSError`` from ``subprocess``.
    """
    if package is not None:
        require_program(command[0], package)
    result = subprocess.run(command, input=input, capture_output=True, timeout=timeout, check=False, cwd=cwd)
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"`{' '.join(map(str, command))}` failed with status {result.returncode}: {stderr[-2000:]}")
    return result.stdout

"""Tiny synthetic sources for the corpus tests: apt Translation/Packages lists and gettext catalogues.

Written in the real on-disk formats (lz4-compressed deb822 stanzas, ``.mo``
files compiled by ``msgfmt``) so the readers under test parse what they
parse in a full build.
"""

import subprocess
from pathlib import Path

import tensorflow_datasets as tfds

MAIN = "deb.debian.org_debian_dists_bookworm_main"
ADJECTIVES = ["red", "green", "blue", "small", "large", "fast", "quiet", "simple", "modern", "secure", "portable", "tiny"]
NOUNS = ["image", "music", "chess", "mail", "weather", "calendar", "photo", "video", "archive", "font", "network", "terminal"]
GERMAN = {
    "red": "rot", "green": "grün", "blue": "blau", "small": "klein", "large": "groß", "fast": "schnell",
    "quiet": "leise", "simple": "einfach", "modern": "modern", "secure": "sicher", "portable": "portabel",
    "tiny": "winzig", "image": "Bild", "music": "Musik", "chess": "Schach", "mail": "Post", "weather": "Wetter",
    "calendar": "Kalender", "photo": "Foto", "video": "Video", "archive": "Archiv", "font": "Schrift",
    "network": "Netzwerk", "terminal": "Terminal",
}  # fmt: skip


def write_lz4(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["lz4", "-q", "-z", "-f", "-", str(path)], input=text.encode("utf-8"), check=True)


def stanza(package, md5, language, synopsis, paragraphs):
    """A Translation-<language> stanza; a paragraph is a str (folded) or a list of verbatim lines."""
    lines = [f"Package: {package}", f"Description-md5: {md5}", f"Description-{language}: {synopsis}"]
    for i, paragraph in enumerate(paragraphs):
        if i:
            lines.append(" .")
        if isinstance(paragraph, str):
            words, line = paragraph.split(), ""
            for word in words:  # fold at about 60 characters, as dpkg descriptions are
                if line and len(line) + len(word) > 60:
                    lines.append(" " + line)
                    line = word
                else:
                    line = f"{line} {word}".strip()
            lines.append(" " + line)
        else:
            lines += ["  " + item for item in paragraph]
    return "\n".join(lines) + "\n"


def write_apt_lists(raw_dir, records, sources=None):
    """``records``: {language: [(package, md5, synopsis, paragraphs), ...]}; ``sources``: {binary: source}."""
    lists = Path(raw_dir) / "apt-lists"
    for language, stanzas in records.items():
        text = "\n".join(stanza(p, m, language, s, pars) for p, m, s, pars in stanzas)
        write_lz4(lists / f"{MAIN}_i18n_Translation-{language}.lz4", text)
    if sources:
        text = "\n".join(
            f"Package: {binary}\n" + (f"Source: {source} (1.0-1)\n" if source != binary else "") + "Version: 1.0-1\n"
            for binary, source in sources.items()
        )
        write_lz4(lists / f"{MAIN}_binary-amd64_Packages.lz4", text)
    return lists


def compile_mo(path, entries):
    """Compile ``entries`` ((msgid, msgstr) or (msgctxt, msgid, msgstr)) with ``msgfmt``."""
    def quote(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    po = ['msgid ""', 'msgstr ""', '"Content-Type: text/plain; charset=UTF-8\\n"', ""]
    for entry in entries:
        if len(entry) == 3:
            po.append(f"msgctxt {quote(entry[0])}")
            entry = entry[1:]
        po += [f"msgid {quote(entry[0])}", f"msgstr {quote(entry[1])}", ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".po").write_text("\n".join(po), encoding="utf-8")
    subprocess.run(["msgfmt", "-o", str(path), str(path.with_suffix(".po"))], check=True)
    return path


def prepare(name, data_dir, **builder_kwargs):
    """Build ``name`` into ``data_dir`` with TFDS (no GCS lookup) and return the builder."""
    builder = tfds.builder(name, data_dir=str(data_dir), **builder_kwargs)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    return builder


def load_all(name, data_dir):
    """Load every split of a prepared dataset through ``tfds.load`` as lists of NumPy dicts."""
    splits = tfds.load(name, data_dir=str(data_dir), split=["train", "validation", "test"], download=False)
    return {split: list(tfds.as_numpy(ds)) for split, ds in zip(("train", "validation", "test"), splits)}


def text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value

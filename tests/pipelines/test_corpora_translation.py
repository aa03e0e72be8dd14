import hashlib

import pytest

import pipelines.corpora.translation  # noqa: F401  (registers tfsuite_translation)
from pipelines.corpora import debian_descriptions, gettext_catalogs
from pipelines.corpora.sources import MissingSourceError
from pipelines.corpora.splits import assign_split, dedup_key
from tests.pipelines.corpora_testdata import (
    ADJECTIVES,
    GERMAN,
    NOUNS,
    compile_mo,
    load_all,
    prepare,
    text,
    write_apt_lists,
)

GROUPED = ADJECTIVES[:3]  # red-/green-/blue-<noun> are built from one source package "<noun>-viewers"


def _md5(package):
    return hashlib.md5(package.encode()).hexdigest()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("translation")
    en, de, ja, binary_to_source = [], [], [], {}
    for adj in ADJECTIVES:
        for noun in NOUNS:
            package = f"{adj}-{noun}"
            binary_to_source[package] = f"{noun}-viewers" if adj in GROUPED else package
            md5 = _md5(package)
            en.append((package, md5, f"{adj} {noun} viewer for the desktop",
                       [f"The {adj} {noun} viewer shows {noun} files quickly.", f"It is a {adj} program for every {noun} collection."]))
            de_pars = [f"Der {GERMAN[adj]} {GERMAN[noun]}-Betrachter zeigt {GERMAN[noun]}-Dateien schnell an.",
                       f"Es ist ein {GERMAN[adj]}es Programm für jede {GERMAN[noun]}-Sammlung."]
            if package == "tiny-font":
                de_pars = de_pars[:1]  # paragraph counts differ: only the synopsis aligns
            de_synopsis = f"{GERMAN[adj]} {GERMAN[noun]} Betrachter für den Desktop"
            if package == "tiny-terminal":
                de_synopsis = en[-1][2]  # untranslated: dropped
            de.append((package, md5, de_synopsis, de_pars))
            if adj in ADJECTIVES[:4]:
                ja.append((package, md5, "デスクトップ用の画像ビューア", ["画像ファイルをすばやく表示します。", "すべてのコレクションのためのプログラムです。"]))
    write_apt_lists(root / "raw", {"en": en, "de": de, "ja": ja}, binary_to_source)
    de_mo = compile_mo(root / "locale/de/LC_MESSAGES/demo.mo", [
        ("&Open the file", "Datei ö&ffnen"),
        ("Print %s now", "Drucke %s jetzt"),
        ("menu", "_Save the document", "Dokument _speichern"),
        ("RED IMAGE viewer for the desktop!", "Duplikat"),
        ("Close the window", "Close the window"),
        ("Quit", "Beenden"),
    ])  # fmt: skip
    ja_mo = compile_mo(root / "locale/ja/LC_MESSAGES/demo.mo", [("&Open the file", "ファイルを開く(&O)")])
    return root, de_mo, ja_mo


@pytest.fixture(scope="module")
def en_de(sources):
    root, de_mo, _ = sources
    prepare("tfsuite_translation/en_de", root / "tfds", raw_dir=root / "raw", catalogs=[de_mo], fetch=False)
    return load_all("tfsuite_translation/en_de", root / "tfds")


def test_parse_folds_paragraphs_and_keeps_verbatim_lines():
    stanza = (
        "Package: demo\nDescription-md5: abc\nDescription-en: Demo tool\n"
        " First line\n continues here.\n .\n Features:\n  * one\n  * two\n"
    )
    [(package, md5, synopsis, paragraphs)] = list(debian_descriptions.parse(stanza, "en"))
    assert (package, md5, synopsis) == ("demo", "abc", "Demo tool")
    assert paragraphs == ("First line continues here.", "Features:\n* one\n* two")


def test_mo_reader_strips_accelerators_and_context(sources):
    _, de_mo, ja_mo = sources
    pairs = dict(gettext_catalogs.read_mo(de_mo))
    assert pairs["_Save the document"] == "Dokument _speichern"  # msgctxt dropped from the key
    usable = dict(gettext_catalogs.usable_pairs([de_mo]))
    assert usable["Open the file"] == "Datei öffnen"
    assert usable["Save the document"] == "Dokument speichern"
    assert "Print %s now" not in usable and "Close the window" not in usable and "Quit" not in usable
    assert dict(gettext_catalogs.usable_pairs([ja_mo])) == {"Open the file": "ファイルを開く"}


def test_en_de_pairs_features_dedup_and_sources(en_de):
    examples = [ex for split in en_de.values() for ex in split]
    assert set(examples[0]) == {"en", "de", "source", "source_item"}
    english = [text(ex["en"]) for ex in examples]
    # 144 synopses minus 1 untranslated, 2 paragraphs each except tiny-font's, plus 2 usable catalogue strings.
    assert len(examples) == 143 + 2 * 143 + 2
    assert len({dedup_key(e) for e in english}) == len(english), "near-duplicate English sources survived"
    by_en = {text(ex["en"]): ex for ex in examples}
    assert text(by_en["Open the file"]["de"]) == "Datei öffnen"
    assert text(by_en["Open the file"]["source"]) == "gettext"
    assert "RED IMAGE viewer for the desktop!" not in by_en  # Debian's "red image viewer ..." came first
    assert text(by_en["red image viewer for the desktop"]["de"]) == "rot Bild Betrachter für den Desktop"
    assert "tiny terminal viewer for the desktop" not in by_en
    assert "The tiny font viewer shows font files quickly." not in by_en  # paragraph counts differ
    assert text(by_en["tiny font viewer for the desktop"]["source"]) == "debian-synopsis"
    assert text(by_en["The red font viewer shows font files quickly."]["source"]) == "debian-paragraph"


def test_en_de_split_by_source_package(en_de):
    assert all(en_de[split] for split in en_de), {k: len(v) for k, v in en_de.items()}
    items = {split: {text(ex["source_item"]) for ex in exs} for split, exs in en_de.items()}
    assert not items["train"] & items["validation"] and not items["train"] & items["test"]
    assert not items["validation"] & items["test"]
    for split, exs in en_de.items():
        for ex in exs:
            assert assign_split(text(ex["source_item"])) == split
    # Binary packages of one source package share the split key.
    keys = {text(ex["source_item"]) for exs in en_de.values() for ex in exs if text(ex["en"]).startswith(("red image", "blue image"))}
    assert keys == {"debian:image-viewers"}


def test_en_ja_config(sources):
    root, _, ja_mo = sources
    builder = prepare("tfsuite_translation/en_ja", root / "tfds", raw_dir=root / "raw", catalogs=[ja_mo], fetch=False)
    assert builder.info.supervised_keys == ("en", "ja")
    data = load_all("tfsuite_translation/en_ja", root / "tfds")
    examples = [ex for split in data.values() for ex in split]
    assert len(examples) == 48 * 3 + 1
    assert {text(ex["ja"]) for ex in examples if text(ex["en"]) == "Open the file"} == {"ファイルを開く"}


def test_missing_lists_and_missing_lz4_are_clear(tmp_path, monkeypatch):
    with pytest.raises(MissingSourceError, match=r"Translation-en\.lz4"):
        debian_descriptions.load("en", tmp_path, fetch=False)
    write_apt_lists(tmp_path, {"en": [("demo", "abc", "Demo tool", ["Some text here."])]})
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(MissingSourceError, match=r"`lz4`.*apt-get install --no-install-recommends lz4"):
        debian_descriptions.load("en", tmp_path, fetch=False)

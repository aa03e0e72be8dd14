import hashlib

import pytest

import pipelines.corpora.summarization  # noqa: F401  (registers tfsuite_summarization)
from pipelines.corpora.splits import assign_split
from tests.pipelines.corpora_testdata import ADJECTIVES, NOUNS, load_all, prepare, text, write_apt_lists


def _document(adj, noun, words):
    sentence = f"The {adj} {noun} program keeps your {noun} collection tidy and easy to browse."
    out = []
    while len(" ".join(out).split()) < words:
        out.append(sentence)
    return [" ".join(out[: len(out) // 2]), " ".join(out[len(out) // 2 :])]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("summarization")
    records, sources = [], {}
    for adj in ADJECTIVES:
        for noun in NOUNS:
            package = f"{adj}-{noun}"
            sources[package] = f"{noun}-suite" if adj in ADJECTIVES[:2] else package
            records.append((package, hashlib.md5(package.encode()).hexdigest(), f"{adj} {noun} organiser for the desktop", _document(adj, noun, 40)))
    # Filtered out: document too short, summary too short, summary repeated (case and digits folded).
    records.append(("short-doc", "1" * 32, "organiser with a short text", ["Only a few words here."]))
    records.append(("short-sum", "2" * 32, "Organiser", _document("short", "summary", 40)))
    records.append(("zz-repeat", "3" * 32, "RED image organiser for the desktop!", _document("other", "text", 40)))
    write_apt_lists(root / "raw", {"en": records}, sources)
    prepare("tfsuite_summarization", root / "tfds", raw_dir=root / "raw", fetch=False)
    return load_all("tfsuite_summarization", root / "tfds")


def test_pairs_filtered_and_deduplicated(data):
    examples = [ex for split in data.values() for ex in split]
    assert set(examples[0]) == {"document", "summary", "package", "source_item"}
    assert len(examples) == len(ADJECTIVES) * len(NOUNS)
    packages = {text(ex["package"]) for ex in examples}
    assert not packages & {"short-doc", "short-sum", "zz-repeat"}
    for ex in examples:
        document, summary = text(ex["document"]), text(ex["summary"])
        assert 30 <= len(document.split()) <= 300 and 3 <= len(summary.split()) <= 15
        assert "\n\n" in document  # paragraphs kept apart
        adj, noun = text(ex["package"]).split("-")
        assert summary == f"{adj} {noun} organiser for the desktop"


def test_split_by_source_package(data):
    assert all(data[split] for split in data)
    seen = {}
    for split, exs in data.items():
        for ex in exs:
            item = text(ex["source_item"])
            assert assign_split(item) == split
            assert seen.setdefault(item, split) == split
    grouped = {text(ex["source_item"]) for exs in data.values() for ex in exs if text(ex["package"]) in ("red-chess", "green-chess")}
    assert grouped == {"debian:chess-suite"}

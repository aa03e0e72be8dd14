import collections

import pytest

from pipelines.corpora import build, python_stdlib, sources
from pipelines.corpora.splits import Deduplicator, assign_split, dedup_key


def test_assign_split_is_stable_and_proportional():
    keys = [f"package-{i}" for i in range(20000)]
    counts = collections.Counter(assign_split(k) for k in keys)
    assert counts["train"] / len(keys) == pytest.approx(0.9, abs=0.01)
    assert counts["validation"] / len(keys) == pytest.approx(0.05, abs=0.005)
    assert [assign_split(k) for k in keys[:50]] == [assign_split(k) for k in keys[:50]]
    assert assign_split("x", fractions=(0.0, 0.0, 1.0)) == "test"
    assert sum(assign_split(k, salt="other") != assign_split(k) for k in keys) > 1000
    with pytest.raises(ValueError, match="summing to 1"):
        assign_split("x", fractions=(0.8, 0.1))


def test_dedup_key_folds_case_digits_and_punctuation():
    assert dedup_key("Open File #2 ...") == dedup_key("open file 17") == "open file 0"
    assert dedup_key("Datei  öffnen!") == "datei öffnen"
    dedup = Deduplicator()
    assert [dedup.add(s) for s in ("Save file", "SAVE FILE.", "Save files")] == [True, False, True]
    assert dedup.dropped == 1


def test_data_dirs_and_missing_source_messages(tmp_path, monkeypatch):
    monkeypatch.setenv("TFSUITE_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setenv("TFSUITE_RAW_DIR", str(tmp_path / "raw"))
    assert sources.data_dir() == tmp_path / "tfds" and sources.raw_dir() == tmp_path / "raw"
    assert sources.data_dir("/elsewhere") == sources.Path("/elsewhere")
    monkeypatch.delenv("TFSUITE_DATA_DIR")
    assert sources.data_dir() == sources.REPO_ROOT / "data" / "tfds"
    with pytest.raises(sources.MissingSourceError, match=r"emoji list .*emoji-test.txt not found: install the Debian package `unicode-data`"):
        sources.require_file(tmp_path / "emoji-test.txt", "unicode-data", "emoji list")
    with pytest.raises(RuntimeError, match=r"`false` failed with status 1"):
        sources.run(["false"])


def test_dataset_names():
    assert build.dataset_names() == [
        "tfsuite_translation/en_de", "tfsuite_translation/en_ja", "tfsuite_summarization", "tfsuite_qa",
        "tfsuite_code", "tfsuite_captions", "tfsuite_speech",
    ]  # fmt: skip
    assert build.dataset_names("qa") == ["tfsuite_qa"]
    assert build.dataset_names("translation/en_ja") == ["tfsuite_translation/en_ja"]
    with pytest.raises(ValueError, match=r"unknown corpus 'wikipedia'; choose one of"):
        build.dataset_names("wikipedia")
    with pytest.raises(ValueError, match=r"has no config 'en_fr'"):
        build.dataset_names("tfsuite_translation/en_fr")


def test_build_caps_splits_in_a_separate_dir_and_prints_counts(tmp_path, monkeypatch, capsys):
    # A small stand-in for the stdlib keeps the test fast: 300 documented functions.
    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    (stdlib / "ops.py").write_text(
        "".join(f'def op_{i}(x):\n    """Return x shifted by {i} units."""\n    return x + {i}\n\n\n' for i in range(300))
    )
    monkeypatch.setattr(python_stdlib, "stdlib_dir", lambda: stdlib)
    monkeypatch.setenv("TFSUITE_DATA_DIR", str(tmp_path / "tfds"))
    lines = []
    counts = build.build("code", max_examples=3, print_fn=lines.append)
    assert counts == {"tfsuite_code": {"train": 3, "validation": 3, "test": 3}}
    assert (tmp_path / "tfds" / "max_examples_3" / "tfsuite_code").is_dir() and not (tmp_path / "tfds" / "tfsuite_code").exists()
    assert lines[0].startswith("tfsuite_code 1.0.0 (built in") and lines[1].split() == ["train", "3"]
    again = []
    build.build("code", max_examples=3, print_fn=again.append)
    assert "already built" in again[0] and again[1:] == lines[1:]
    assert build.main(["no_such_corpus"]) == 2
    assert "unknown corpus 'no_such_corpus'" in capsys.readouterr().err
    assert build.main(["code", "--max-examples", "0"]) == 2

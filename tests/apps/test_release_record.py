"""``apps.releases.record_release_evaluation``: a release's own figures go into its MANIFEST and checks/ folder."""

import json

import pytest

from apps.releases import record_release_evaluation, recorded_manifest


def test_a_version_without_a_manifest_entry_is_refused_and_nothing_is_written(tmp_path):
    (tmp_path / "app" / "3").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no entry for version 3: export it with `tfsuite export`"):
        recorded_manifest(tmp_path / "app" / "3")
    with pytest.raises(FileNotFoundError):
        record_release_evaluation(tmp_path / "app" / "3", {"metrics": {}}, {"split": "test[:1]", "metrics": {}})
    assert sorted(p.name for p in (tmp_path / "app").iterdir()) == ["3"]


def test_the_record_lands_in_the_entry_and_the_slice_in_checks(tmp_path):
    app_dir = tmp_path / "app"
    (app_dir / "2").mkdir(parents=True)
    (app_dir / "MANIFEST.json").write_text(json.dumps({"latest": 2, "versions": {"2": {"path": "2"}}}))
    check = {"split": "test[:1]", "metrics": {"bleu": 1.0}, "sources": ["a"], "references": ["b"], "outputs": ["c"]}
    paths = record_release_evaluation(app_dir / "2", {"metrics": {"bleu": 2.0}}, check)
    assert paths == [app_dir / "MANIFEST.json", app_dir / "checks" / "2.json"]
    entry = json.loads((app_dir / "MANIFEST.json").read_text())["versions"]["2"]
    assert entry["path"] == "2" and entry["release_evaluation"]["metrics"] == {"bleu": 2.0}
    assert entry["release_evaluation"]["check_slice"] == {"file": "checks/2.json", "split": "test[:1]", "metrics": {"bleu": 1.0}}
    assert json.loads((app_dir / "checks" / "2.json").read_text()) == check


def test_recorded_figures_name_the_version_and_its_date(tmp_path):
    from apps.releases import recorded_figures

    app_dir = tmp_path / "app"
    (app_dir / "2").mkdir(parents=True)
    (app_dir / "MANIFEST.json").write_text(json.dumps({"latest": 2, "versions": {"2": {"path": "2"}}}))
    assert recorded_figures("app", "scratch_", models_dir=tmp_path) == "nothing"  # never evaluated
    record_release_evaluation(app_dir / "2", {"metrics": {"f1": 0.9, "scratch_f1": 0.56789}},
                              {"split": "test[:1]", "metrics": {}})
    line = recorded_figures("app", "scratch_", models_dir=tmp_path)
    assert line.startswith("scratch_f1 0.5679 (version 2, 20") and "f1 0.9" not in line
    assert recorded_figures("missing", models_dir=tmp_path) == "nothing"

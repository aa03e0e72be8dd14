"""Checks every released text app shares: what a fresh clone holds under ``saved_models/<release>/``.

A release's own figures come from ``tfsuite evaluate <app> --record``: the
whole test split through the SavedModel's ``serving_default`` (what TF
Serving answers) as ``release_evaluation`` in its MANIFEST.json entry, and the
first 200 test inputs with their outputs and metrics in ``checks/<version>.json``.
The release tests read those records, and re-decode the 200 inputs with plain
``tf.saved_model.load`` (as TF Serving would) and re-score them.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf

MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_RELEASE_BYTES = 32 * 1024 * 1024  # "about 30 MB per release"


def latest_version(release_dir):
    """``(version_dir, entry)`` of the latest version in ``release_dir/MANIFEST.json``: what a release's tests check."""
    manifest = json.loads((Path(release_dir) / "MANIFEST.json").read_text(encoding="utf-8"))
    version = str(manifest["latest"])
    return Path(release_dir) / version, manifest["versions"][version]


def file_sizes(version_dir):
    return {str(p.relative_to(version_dir)): p.stat().st_size for p in Path(version_dir).rglob("*") if p.is_file()}


def check_sizes(version_dir):
    sizes = file_sizes(version_dir)
    assert sizes, f"no files under {version_dir}"
    too_big = {name: size for name, size in sizes.items() if size > MAX_FILE_BYTES}
    assert not too_big, f"files over 20 MB: {too_big}"
    assert sum(sizes.values()) <= MAX_RELEASE_BYTES, f"{version_dir}: {sum(sizes.values()) / 1e6:.1f} MB in all"


def check_slice(release_dir, entry):
    """The recorded 200-input slice: ``{"split", "metrics", "sources", "references", "outputs"}``."""
    record = entry["release_evaluation"]["check_slice"]
    check = json.loads((Path(release_dir) / record["file"]).read_text(encoding="utf-8"))
    assert check["metrics"] == record["metrics"] and len(check["sources"]) == len(check["outputs"]) == 200
    return check


def decode(version_dir, input_name, output_name, texts, batch_size=50):
    """``serving_default`` of the SavedModel on ``texts``: outputs and statuses, as str."""
    serving = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    outputs, statuses = [], []
    for begin in range(0, len(texts), batch_size):
        result = serving(**{input_name: tf.constant(texts[begin : begin + batch_size])})
        outputs += [t.decode("utf-8") for t in result[output_name].numpy()]
        statuses += [s.decode("utf-8") for s in result["status"].numpy()]
    return outputs, statuses


def check_rescoring(check, outputs, score, tolerance=0.5, same_share=0.95):
    """The re-decoded slice scores what was recorded (within ``tolerance`` points), its outputs mostly equal.

    Decoding on another CPU may change a floating-point tie in the beam, so a
    few outputs may differ; the metrics must not move by more than ``tolerance``.
    """
    same = np.mean([a == b for a, b in zip(outputs, check["outputs"])])
    assert same >= same_share, f"only {same:.0%} of the 200 outputs equal the recorded ones"
    rescored = score(outputs, check["references"])
    for name, recorded in check["metrics"].items():
        assert abs(rescored[name] - recorded) <= tolerance, (name, rescored[name], recorded)
    return rescored

"""Slow: the released en-de recipe trained through the CLI reaches the issue's bar on the test split.

``make test-slow`` runs it (minutes to an hour on 2 CPU cores); it needs the
built ``tfsuite_translation`` corpus. The command is the one recorded in
``saved_models/translation_en_de/MANIFEST.json``.
"""

import json
import re
import subprocess
import sys

import pytest

from pipelines.corpora import sources

BLEU_BAR = 25.0
TRAIN_ARGS = ["train", "translation", "--epochs", "6", "--verbose", "2"]


@pytest.mark.slow
def test_en_de_reaches_bleu_bar(tmp_path):
    if not (sources.data_dir() / "tfsuite_translation").is_dir():
        pytest.skip("tfsuite_translation is not built: run `tfsuite data build translation`")
    command = [sys.executable, "-m", "apps.cli", *TRAIN_ARGS, "--runs-dir", str(tmp_path)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    scores = dict(re.findall(r"^(bleu|chrf): ([0-9.]+)$", completed.stdout, flags=re.M))
    assert set(scores) == {"bleu", "chrf"}, completed.stdout[-3000:]
    record = json.loads((tmp_path / "translation" / "en_de" / "metrics.json").read_text())
    print(f"bleu {scores['bleu']} chrf {scores['chrf']} in {record['train_seconds']} s of training")
    assert float(scores["bleu"]) >= BLEU_BAR
    assert float(scores["chrf"]) > 40.0

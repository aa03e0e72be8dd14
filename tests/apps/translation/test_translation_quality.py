"""Slow: the released en-de recipe, trained through the CLI, reproduces the release's test scores.

``make test-slow`` runs it; it needs the built ``tfsuite_translation`` corpus.
Measured 2026-11-29 on the quiet 2-core machine: 5 epochs of 460 batches of
~2,048 tokens, training time 2553.8 s (43 min), then beam-4 decoding of the
3,507 test sentences in 218 s: ``bleu: 4.3668``, ``chrf: 20.8147``.

Issue 5's target is BLEU 25 within 60 minutes of training; this recipe does
not reach it (about 2,300 updates of a 4.7M-parameter model is what 60 CPU
minutes buy here), so the bars below are the release's figures less a
margin for run-to-run noise, not the issue's target (BLEU_TARGET).
"""

import json
import re
import subprocess
import sys

import pytest

from pipelines.corpora import sources

BLEU_TARGET = 25.0  # issue 5's target, not reached (see above)
BLEU_BAR = 3.5  # the release measured 4.37
CHRF_BAR = 18.0  # the release measured 20.81
TRAIN_ARGS = ["train", "translation"]  # the release recipe: TranslationConfig's defaults


@pytest.mark.slow
def test_en_de_recipe_reproduces_the_release_scores(tmp_path):
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
    assert float(scores["chrf"]) >= CHRF_BAR

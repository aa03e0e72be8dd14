"""The shared trainer: exact resume after ``kill -9`` (step checkpoints), damaged checkpoints, precision.

The resume tests run ``tests/apps/resume_worker.py`` in subprocesses: one
uninterrupted tiny translation run, and one that kills itself with SIGKILL in
the middle of an epoch and is then rerun with the same command.
"""

import json
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from apps import cli
from apps.checkpoints import CheckpointStore
from apps.config import ConfigError
from apps import trainer
from apps.trainer import CheckpointError, _segments, precision, resolve_precision, train
from apps.translation import TranslationApp, TranslationConfig
from apps.seq2seq import Seq2SeqApp
from tests.apps.translation.test_app import TINY, synthetic_pairs

REPO = Path(__file__).resolve().parents[2]
STEPS = 12  # 3 epochs of 4 batches (resume_worker.CONFIG)


def _worker(runs_dir, kill_at=None):
    command = [sys.executable, "-m", "tests.apps.resume_worker", str(runs_dir)] + ([str(kill_at)] if kill_at else [])
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


def _weights(path):
    model = keras.saving.load_model(path)
    return model.get_weights()


def _checkpoint_weights(runs_dir, step):
    import h5py

    values = []
    with h5py.File(Path(runs_dir) / "translation/tiny/checkpoints" / f"step-{step:08d}.weights.h5") as f:
        f.visititems(lambda name, item: values.append((name, item[()])) if isinstance(item, h5py.Dataset) else None)
    return dict(values)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    runs = tmp_path_factory.mktemp("uninterrupted")
    done = _worker(runs)
    assert done.returncode == 0, done.stderr[-3000:]
    return runs


def test_segments_finish_the_interrupted_epoch_first():
    assert _segments(0, 4, 3) == [(0, 3, 4, 0)]
    assert _segments(6, 4, 3) == [(1, 2, 2, 6), (2, 3, 4, 8)]
    assert _segments(8, 4, 3) == [(2, 3, 4, 8)]
    assert _segments(12, 4, 3) == []


def test_resume_after_kill_9_mid_epoch_gives_the_uninterrupted_weights(uninterrupted, tmp_path):
    # Checkpoints every 3 steps and at each epoch's end (4): the last before the kill at 7 is step 6,
    # the middle of the second epoch.
    killed = _worker(tmp_path, kill_at=7)
    assert killed.returncode == -9, killed.stderr[-3000:]
    store = CheckpointStore(tmp_path / "translation/tiny/checkpoints")
    assert store.steps() == [6, 4]
    resumed = _worker(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming at step 6 of 12" in resumed.stdout
    # Nothing lost, nothing repeated: the final optimizer state and weights are the uninterrupted run's.
    ours, theirs = _checkpoint_weights(tmp_path, STEPS), _checkpoint_weights(uninterrupted, STEPS)
    assert sorted(ours) == sorted(theirs) and len(ours) > 100
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    for a, b in zip(_weights(tmp_path / "translation/tiny/model.keras"), _weights(uninterrupted / "translation/tiny/model.keras")):
        np.testing.assert_array_equal(a, b)
    history = (tmp_path / "translation/tiny/history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["0", "1", "2"]  # one row per epoch, none twice


def test_damaged_newest_checkpoint_is_kept_aside_and_the_older_one_resumes(uninterrupted, tmp_path):
    killed = _worker(tmp_path, kill_at=7)
    assert killed.returncode == -9
    folder = tmp_path / "translation/tiny/checkpoints"
    newest = folder / "step-00000006.weights.h5"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # truncated, as by a full disk
    resumed = _worker(tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint step 6" in resumed.stderr and "truncated" in resumed.stderr
    assert "resuming at step 4 of 12" in resumed.stdout  # the end of the first epoch
    assert (folder / "step-00000006.weights.h5.corrupt").is_file()  # kept, not deleted
    ours, theirs = _checkpoint_weights(tmp_path, STEPS), _checkpoint_weights(uninterrupted, STEPS)
    for name in ours:
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)


def _tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    return model


def test_no_readable_checkpoint_is_a_clear_error_and_touches_nothing(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    model = _tiny_model()
    store.save(model, step=5, epoch=0)
    (tmp_path / "step-00000005.weights.h5").write_bytes(b"not an h5 file")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(CheckpointError, match=r"no checkpoint .* can be resumed .*step 5: .*(truncated|SHA-256)"):
        store.restore_latest(_tiny_model())
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_record_without_its_weights_and_an_unreadable_record(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    model = _tiny_model()
    store.save(model, step=1, epoch=0)
    store.save(model, step=2, epoch=0)
    (tmp_path / "step-00000002.weights.h5").unlink()
    messages = []
    assert store.restore_latest(_tiny_model(), log=messages.append)["step"] == 1
    assert "step-00000002.weights.h5 is missing" in messages[0]
    (tmp_path / "step-00000001.json").write_text("{")
    with pytest.raises(CheckpointError, match="unreadable"):
        store.restore_latest(_tiny_model())


def test_keep_prunes_only_after_the_new_checkpoint_verifies(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    model = _tiny_model()
    for step in (10, 20, 30):
        store.save(model, step=step, epoch=0)
    assert store.steps() == [30, 20]
    assert not list(tmp_path.glob(".tmp-*"))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--precision", "fp8"], "precision must be one of"),
        (["--learning-rate", "nan"], "finite"),
        (["--label-smoothing", "inf"], "finite"),
    ],
)
def test_bad_precision_and_non_finite_floats_are_refused(argv, message, capsys):
    assert cli.main(["train", "translation", *argv]) == 2
    assert message in capsys.readouterr().err
    with pytest.raises(ConfigError, match="finite"):
        TranslationConfig(dropout=float("nan"))


def test_mixed_bfloat16_training_saves_a_float32_model(tmp_path, monkeypatch):
    english, german = synthetic_pairs()
    monkeypatch.setattr(Seq2SeqApp, "load_texts", lambda self, config, split: (english, german))
    config = TranslationConfig(**{**TINY, "epochs": 1, "precision": "mixed_bfloat16"}, runs_dir=str(tmp_path), run_name="bf16")
    result = train(TranslationApp(), config, command="pytest")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after training
    model = keras.saving.load_model(result.model_path)
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} == {"float32"}
    assert json.loads((result.run_dir / "metrics.json").read_text())["precision"] == "mixed_bfloat16"


def test_precision_context_restores_the_policy_after_an_error():
    with pytest.raises(RuntimeError):
        with precision("mixed_bfloat16"):
            assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
            raise RuntimeError("boom")
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_picks_bf16_only_where_the_cpu_has_it(has_bf16, monkeypatch):
    # Without AVX512-BF16/AMX, TensorFlow emulates bf16 matmuls: measured ~8x slower than float32 here.
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: has_bf16)
    policy, why = resolve_precision("auto")
    assert policy == ("mixed_bfloat16" if has_bf16 else "float32")
    assert why.startswith(f"auto: {policy}") and ("has no" in why) != has_bf16
    policy, why = resolve_precision("mixed_bfloat16")
    assert policy == "mixed_bfloat16" and ("emulated" in why) != has_bf16  # an explicit choice is kept, with a warning
    assert resolve_precision("float32") == ("float32", "")


def test_auto_precision_is_resolved_and_recorded_by_the_run(tmp_path, monkeypatch, capsys):
    english, german = synthetic_pairs()
    monkeypatch.setattr(Seq2SeqApp, "load_texts", lambda self, config, split: (english, german))
    monkeypatch.setattr(trainer, "_cpu_has_bf16", lambda: False)
    assert TranslationConfig().precision == "auto"
    config = TranslationConfig(**{**TINY, "epochs": 1, "precision": "auto"}, runs_dir=str(tmp_path), run_name="auto")
    result = train(TranslationApp(), config, command="pytest")
    assert "precision auto: float32 (CPU has no bf16 instructions)" in capsys.readouterr().out
    assert json.loads((result.run_dir / "config.json").read_text())["precision"] == "float32"
    assert json.loads((result.run_dir / "metrics.json").read_text())["precision"] == "float32"

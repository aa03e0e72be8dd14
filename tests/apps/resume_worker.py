"""Subprocess for tests/apps/test_trainer.py: a tiny translation run that may kill itself with SIGKILL.

Usage: ``python -m tests.apps.resume_worker RUNS_DIR [KILL_AT_STEP]``. The
synthetic phrase corpus of ``tests/apps/translation/test_app.py`` replaces
the built one, so the run needs no data; with ``KILL_AT_STEP`` the process
sends itself ``SIGKILL`` right after that training step (no cleanup, no
flush: what ``kill -9`` does).
"""

import os
import signal
import sys

import keras
import tensorflow as tf

from apps.trainer import train
from apps.translation import TranslationApp, TranslationConfig
from apps.seq2seq import Seq2SeqApp
from tests.apps.translation.test_app import TINY, synthetic_pairs

# Dropout on, so the resumed run must also restore the random streams; a checkpoint every 3 steps
# and 4 steps an epoch, so a kill lands between checkpoints and inside an epoch.
CONFIG = {**TINY, "dropout": float(os.environ.get("RESUME_DROPOUT", 0.2)), "epochs": 3, "checkpoint_steps": 3, "deterministic": True, "run_name": "tiny"}


class KillAt(keras.callbacks.Callback):
    def __init__(self, step):
        super().__init__()
        self.kill_at, self.step = step, 0

    def on_train_begin(self, logs=None):
        self.step = int(self.model.optimizer.iterations.numpy())

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def main(runs_dir, kill_at=0):
    tf.config.experimental.enable_op_determinism()
    english, german = synthetic_pairs()
    Seq2SeqApp.load_texts = lambda self, config, split: (english, german)
    Seq2SeqApp.data_version = lambda self, config: "synthetic:0"
    config = TranslationConfig(**CONFIG, runs_dir=runs_dir)
    result = train(TranslationApp(), config, callbacks=[KillAt(kill_at)] if kill_at else [], command="resume_worker")
    print(f"finished: {result.model_path}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)

"""Step checkpoints: resume training after ``kill -9`` from the last saved step, not the last epoch.

A run folder's ``checkpoints/`` holds pairs of files::

    step-00001200.weights.h5   model weights and optimizer state (``model.save_weights``)
    step-00001200.json         step, epoch, size and SHA-256 of the weights file, the
                               dropout random-stream states, time

The weights are written to a temporary name and renamed, then the JSON is
written the same way: a checkpoint exists only once both are complete, so a
process killed while saving leaves the previous checkpoint intact. The JSON
records the weights file's size and hash, so a truncated or damaged file is
detected before Keras reads it.

:meth:`CheckpointStore.restore_latest` loads the newest checkpoint that
verifies. A damaged newer one is renamed ``*.corrupt`` (kept for inspection,
never deleted) with a message saying which checkpoint training resumes from
instead; if none verifies, :class:`~apps.trainer.CheckpointError` says so and
every file stays where it is.

Why not ``keras.callbacks.BackupAndRestore``: it restores the epoch only (a
resumed run repeats the interrupted epoch from its start with mid-epoch
weights) and not the dropout layers' random streams, so a resumed run is not
the run it replaces. With :func:`apps.trainer.train`'s step-indexed data stream,
resuming here gives the same weights as an uninterrupted run
(``tests/apps/test_trainer.py``).

Example::

    store = CheckpointStore("runs/translation/en_de/checkpoints", keep=2)
    store.save(model, step=1200, epoch=2)
    meta = store.restore_latest(model)     # {"step": 1200, "epoch": 2, ...} or None
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import keras

__all__ = ["CheckpointStore", "StepCheckpoint", "seed_generator_states"]

_NAME = re.compile(r"^step-(\d{8,})\.json$")


class CorruptCheckpoint(ValueError):
    """One checkpoint that does not verify or load (the message says why)."""


def _seed_generators(model):
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):  # noqa: SLF001 - Keras' layer walk
        generators.extend(getattr(layer, "_seed_generators", []))
    return generators


def seed_generator_states(model):
    """The random-stream states of the model's dropout (and other random) layers, in layer order."""
    return [[int(v) for v in keras.ops.convert_to_numpy(g.state)] for g in _seed_generators(model)]


def _set_seed_generator_states(model, states):
    generators = _seed_generators(model)
    if len(generators) != len(states):
        raise CorruptCheckpoint(
            f"it holds {len(states)} random-stream states and the model has {len(generators)} random layers "
            "(a checkpoint of another model?)"
        )
    for generator, state in zip(generators, states):
        generator.state.assign(keras.ops.convert_to_tensor(state, generator.state.dtype))


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomically(path, write):
    """``write(temporary_path)``, flush it to disk, then rename it to ``path``.

    The temporary name keeps ``path``'s suffixes (Keras insists on ``.weights.h5``).
    """
    temporary = path.with_name(f".tmp-{path.name}")
    write(temporary)
    with open(temporary, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(temporary, path)


class CheckpointStore:
    """The step checkpoints of one run folder.

    Args:
        directory: folder of the checkpoints (created on the first save).
        keep: int >= 1, verified checkpoints kept; older ones are deleted
            after a newer one is written and verified. Default 2.
    """

    def __init__(self, directory, keep=2):
        self.directory = Path(directory)
        self.keep = max(1, int(keep))

    def _paths(self, step):
        stem = self.directory / f"step-{step:08d}"
        return stem.with_suffix(".weights.h5"), stem.with_suffix(".json")

    def steps(self):
        """Steps with a checkpoint record, newest first."""
        if not self.directory.is_dir():
            return []
        found = (_NAME.match(p.name) for p in self.directory.iterdir())
        return sorted((int(m.group(1)) for m in found if m), reverse=True)

    def save(self, model, step, epoch):
        """Write the checkpoint of ``step`` (atomically) and prune older ones beyond ``keep``."""
        self.directory.mkdir(parents=True, exist_ok=True)
        weights_path, record_path = self._paths(step)
        _write_atomically(weights_path, lambda tmp: model.save_weights(str(tmp)))
        record = {
            "step": int(step),
            "epoch": int(epoch),
            "weights": weights_path.name,
            "size": weights_path.stat().st_size,
            "sha256": _sha256(weights_path),
            "seed_states": seed_generator_states(model),
            "saved": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        _write_atomically(record_path, lambda tmp: tmp.write_text(json.dumps(record) + "\n"))
        self.verify(step)
        for old in self.steps()[self.keep :]:
            for path in self._paths(old):
                path.unlink(missing_ok=True)
        return record

    def verify(self, step):
        """The record of ``step``'s checkpoint; :class:`CorruptCheckpoint` unless its files are whole."""
        weights_path, record_path = self._paths(step)
        try:
            record = json.loads(record_path.read_text())
            expected_size, expected_hash = int(record["size"]), record["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptCheckpoint(f"its record {record_path.name} is unreadable ({type(e).__name__}: {e})") from None
        if not weights_path.is_file():
            raise CorruptCheckpoint(f"{weights_path.name} is missing")
        size = weights_path.stat().st_size
        if size != expected_size:
            raise CorruptCheckpoint(f"{weights_path.name} has {size} bytes, {expected_size} were written (truncated?)")
        if _sha256(weights_path) != expected_hash:
            raise CorruptCheckpoint(f"{weights_path.name} does not match the SHA-256 recorded when it was written")
        return record

    def _set_aside(self, step):
        for path in self._paths(step):
            if path.exists():
                os.replace(path, path.with_name(path.name + ".corrupt"))

    def restore_latest(self, model, log=None):
        """Load the newest checkpoint that verifies into ``model``; its record, or None if there is none.

        The model must be compiled with its optimizer built, so the optimizer
        state loads too. Raises :class:`apps.trainer.CheckpointError` when
        checkpoints exist but none loads (nothing is deleted or renamed then).
        """
        from apps.trainer import CheckpointError

        log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        steps = self.steps()
        problems = []
        for step in steps:
            weights_path, _ = self._paths(step)
            try:
                record = self.verify(step)
                try:
                    model.load_weights(str(weights_path))
                except Exception as e:  # noqa: BLE001 - any failure inside Keras/h5py means the same to the user
                    raise CorruptCheckpoint(f"Keras could not load {weights_path.name} ({type(e).__name__}: {e})") from None
                _set_seed_generator_states(model, record.get("seed_states", []))
            except CorruptCheckpoint as e:
                problems.append((step, str(e)))
                continue
            for bad, why in problems:
                self._set_aside(bad)
                log(
                    f"warning: checkpoint step {bad} in {self.directory}/ is damaged: {why}; kept as "
                    f"step-{bad:08d}.*.corrupt, resuming from the older checkpoint of step {step} instead"
                )
            return record
        if problems:
            details = "; ".join(f"step {step}: {why}" for step, why in problems)
            raise CheckpointError(
                f"no checkpoint in {self.directory}/ can be resumed ({details}); the files are left as they are: "
                f"remove the folder to train from scratch, or pass another --run-name"
            )
        return None


class StepCheckpoint(keras.callbacks.Callback):
    """Save a :class:`CheckpointStore` checkpoint every ``every`` training steps and at each epoch's end.

    Args:
        store: the :class:`CheckpointStore`.
        every: int, steps between saves (0: only at the end of each epoch).
        initial_step: int, the global step the current ``fit`` starts at.
        steps_per_epoch: int, steps of a full epoch (global step -> epoch).
    """

    def __init__(self, store, every, initial_step, steps_per_epoch):
        super().__init__()
        self.store = store
        self.every = int(every)
        self.step = int(initial_step)
        self.steps_per_epoch = int(steps_per_epoch)
        self.last_saved = self.step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every and self.step % self.every == 0:
            self._save()

    def on_epoch_end(self, epoch, logs=None):
        if self.last_saved != self.step:
            self._save()

    def _save(self):
        self.store.save(self.model, self.step, self.step // self.steps_per_epoch)
        self.last_saved = self.step

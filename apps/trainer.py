"""The shared run lifecycle every app goes through: train, evaluate, export.

``train`` runs Keras ``fit`` with a progress bar and writes everything for a
run under ``runs/<app>/<run-name>/``::

    config.json      the config, as printed at the start of the run
    checkpoints/     step checkpoints (apps/checkpoints.py); a rerun of the same
                     command resumes from the last saved step
    history.csv      one row per epoch (appended across resumed runs)
    best.keras       the checkpoint with the best validation metric
    model.keras      the final model: the best checkpoint's weights
    logs/            TensorBoard event files (`tensorboard --logdir runs/`)
    metrics.json     test metrics, epochs, training time and the command

then evaluates ``model.keras`` on the test split and prints each metric on its
own line (``test_accuracy: 0.9123``). Releases (``saved_models/<app>/<version>/``)
are written by ``apps/export.py`` and recorded by ``apps/releases.py``.

Example::

    from apps.registry import get_app
    from apps.trainer import train

    app = get_app("fashion_mnist")
    result = train(app, app.Config(model="lenet5", epochs=5))
    result.metrics["test_accuracy"]
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import json
import shlex
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from apps.checkpoints import CheckpointStore, StepCheckpoint
from apps.config import print_config, save_config
from pipelines import distribute

__all__ = [
    "CheckpointError",
    "RunResult",
    "average_checkpoint_weights",
    "evaluate_checkpoint",
    "load_checkpoint",
    "precision",
    "resolve_precision",
    "print_metrics",
    "run_dir",
    "set_seed",
    "train",
]


class CheckpointError(ValueError):
    """A checkpoint that is missing, not a ``.keras`` archive, or cannot be loaded."""


@dataclass
class RunResult:
    """What :func:`train` produced."""

    run_dir: Path
    model_path: Path
    metrics: dict
    history: dict = field(default_factory=dict)
    initial_epoch: int = 0
    train_seconds: float = 0.0
    strategy: str = ""
    replicas: int = 1


def set_seed(seed):
    """The one place seeds are set: Python, NumPy and the backend (TensorFlow)."""
    keras.utils.set_random_seed(seed)


def run_dir(app, config):
    """``<runs_dir>/<app>/<run_name>``, the run name defaulting to the app's choice."""
    return Path(config.runs_dir) / app.name / (config.run_name or app.default_run_name(config))


def command_line():
    """The command that started this process, for the run's records."""
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])


def print_metrics(metrics, file=None):
    """Print each metric as ``name: value`` on its own line (``test_accuracy: 0.9123``)."""
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}", file=file, flush=True)


def _best_so_far(history_csv, monitor, mode):
    """Best ``monitor`` value in an earlier, interrupted attempt's history (None if none)."""
    if not history_csv.is_file():
        return None
    with history_csv.open() as f:
        values = [float(row[monitor]) for row in csv.DictReader(f) if row.get(monitor)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _callbacks(app, config, directory, resuming):
    monitor, mode = app.monitor, app.monitor_mode
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            str(directory / "best.keras"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            # A resumed run must beat the best epoch of the interrupted attempt.
            initial_value_threshold=_best_so_far(directory / "history.csv", monitor, mode) if resuming else None,
        ),
        keras.callbacks.CSVLogger(str(directory / "history.csv"), append=resuming),
        keras.callbacks.TensorBoard(str(directory / "logs")),
    ]
    if config.patience:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=config.patience))
    return callbacks


def _fit_strategy(config):
    """The strategy ``model.fit`` runs under; parameter servers need a loop ``fit`` does not have."""
    if config.strategy == "parameter_server":
        raise distribute.StrategyError(
            "--strategy parameter_server: Keras 3 model.fit cannot train under ParameterServerStrategy "
            "(its datasets must go through a tf.distribute.coordinator.ClusterCoordinator); use --strategy "
            "multiworker to train on several machines, or pipelines.distribute.make_strategy('parameter_server') "
            "with a ClusterCoordinator loop of your own"
        )
    return distribute.make_strategy(config.strategy)


def _cpu_has_bf16():
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo's flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(policy, strategy=None):
    """``(policy, why)``: the Keras dtype policy to train with, ``"auto"`` made concrete.

    ``auto`` is ``mixed_bfloat16`` on TPUs, on GPUs of compute capability 8.0
    or more and on CPUs with bf16 instructions, else ``float32``: without
    them TensorFlow emulates bf16 matmuls, measured about 8 times slower than
    float32 on this project's 2-core AVX-512 machine without AVX512-BF16. An
    explicit ``mixed_bfloat16`` on such a CPU is kept, with a warning in ``why``.
    """
    is_tpu = isinstance(strategy, tf.distribute.TPUStrategy) if strategy is not None else False
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        capability = tf.config.experimental.get_device_details(gpus[0]).get("compute_capability", (0, 0))
        has_bf16, chip = tuple(capability) >= (8, 0), f"GPU (compute capability {capability})"
    else:
        has_bf16, chip = is_tpu or _cpu_has_bf16(), "TPU" if is_tpu else "CPU"
    if policy == "auto":
        chosen = "mixed_bfloat16" if has_bf16 else "float32"
        return chosen, f"auto: {chosen} ({chip} {'has' if has_bf16 else 'has no'} bf16 instructions)"
    if policy == "mixed_bfloat16" and not has_bf16:
        return policy, (f"warning: this {chip} has no bf16 instructions; mixed_bfloat16 is emulated and much "
                        "slower than float32 here (--precision float32 or auto)")
    return policy, ""


@contextlib.contextmanager
def precision(policy):
    """Run the block under the Keras dtype policy ``policy`` (``float32``, ``mixed_bfloat16``, ...)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _with_cardinality(dataset):
    """``dataset`` with its number of batches known (counted once if tf.data cannot tell).

    Keras warns that the input "ran out of data" after every pass over a
    dataset of unknown cardinality (length-bucketed batches), validation included.
    """
    if int(dataset.cardinality()) != tf.data.UNKNOWN_CARDINALITY:
        return dataset
    count = int(dataset.reduce(np.int64(0), lambda n, _: n + 1))
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


def _segments(initial_step, steps_per_epoch, epochs):
    """``fit`` calls that continue from ``initial_step``: ``[(initial_epoch, end_epoch, steps, first_step)]``.

    A run resumed in the middle of an epoch first finishes that epoch (its
    remaining steps), then runs whole epochs, so epoch boundaries (validation,
    ``history.csv`` rows) fall where an uninterrupted run has them.
    """
    epoch, offset = divmod(initial_step, steps_per_epoch)
    segments = []
    if epoch < epochs and offset:
        segments.append((epoch, epoch + 1, steps_per_epoch - offset, initial_step))
        epoch += 1
    if epoch < epochs:
        segments.append((epoch, epochs, steps_per_epoch, epoch * steps_per_epoch))
    return segments


def train(app, config, callbacks=(), command=None):
    """Train ``app`` with ``config``, keep the best checkpoint, evaluate it on the test split.

    Args:
        app: an :class:`~apps.app.App` instance.
        config: an ``app.Config`` instance.
        callbacks: extra Keras callbacks, run after the shared ones.
        command: str recorded in ``metrics.json``; default: this process's command line.

    ``config.strategy`` picks the ``tf.distribute`` strategy
    (:func:`pipelines.distribute.make_strategy`): the model is built and
    compiled in its scope and the datasets are distributed, ``config.batch_size``
    being the global batch. With ``multiworker`` every worker runs this same
    function; the chief writes the run folder, other workers a
    ``<task>_<index>`` folder inside it. ``config.precision`` sets the Keras
    dtype policy while training; the saved model is float32.

    The training data is one stream: the app's one-pass training dataset,
    repeated (each pass reshuffled by its seeded pipeline), ``steps_per_epoch``
    batches an epoch. Batch ``k`` of the stream depends only on ``k`` and the
    seed, so a run killed at any point resumes from its last step checkpoint
    (:mod:`apps.checkpoints`) by skipping the ``k`` batches already trained on:
    the resumed run trains on the same batches with the same weights,
    optimizer state and dropout streams as the run it replaces.

    Returns:
        :class:`RunResult`. Rerunning with the same run folder after an
        interruption resumes from the last saved step.
    """
    # First: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = _fit_strategy(config)
    set_seed(config.seed)
    directory = run_dir(app, config)
    if not distribute.is_chief(strategy):
        # Every worker runs this same function; only the chief writes the run folder.
        resolver = strategy.cluster_resolver
        directory = directory / f"{resolver.task_type}_{resolver.task_id}"
    directory.mkdir(parents=True, exist_ok=True)
    policy, why = resolve_precision(config.precision, strategy)
    if why:
        print(f"precision {why}", flush=True)
    config = dataclasses.replace(config, precision=policy)  # the run folder records what was used
    print_config(config)
    save_config(config, directory / "config.json")
    per_replica = distribute.per_replica_batch_size(config.batch_size, strategy)
    print(
        f"strategy: {distribute.describe(strategy)}; global batch {config.batch_size}"
        f" = {strategy.num_replicas_in_sync} x {per_replica} per replica; precision {config.precision}",
        flush=True,
    )

    with precision(config.precision):
        datasets = app.build_datasets(config)
        steps_per_epoch = app.steps_per_epoch(config, datasets.train)
        validation = distribute.distribute_dataset(_with_cardinality(datasets.validation), strategy)
        with strategy.scope():  # model and optimizer variables are mirrored on every replica
            model = app.build_model(config)
            compile_kwargs = app.compile_kwargs(config)
            compile_kwargs.setdefault("jit_compile", app.jit_compile(config))
            model.compile(**compile_kwargs)
            model.optimizer.build(model.trainable_variables)  # so a checkpoint restores its state too
            store = CheckpointStore(directory / "checkpoints", keep=config.keep_checkpoints)
            restored = store.restore_latest(model)
        initial_step = restored["step"] if restored else 0
        resuming = initial_step > 0
        print(
            f"run folder: {directory}"
            + (f"  (resuming at step {initial_step} of {config.epochs * steps_per_epoch})" if resuming else ""),
            flush=True,
        )
        print(
            f"{steps_per_epoch} steps per epoch, {config.epochs} epochs; XLA {compile_kwargs['jit_compile']}",
            flush=True,
        )
        if config.verbose:
            model.summary()

        epochs_seen = []
        record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs_seen.append(epoch))
        shared = _callbacks(app, config, directory, resuming)
        history = {}
        start = time.perf_counter()
        segments = _segments(initial_step, steps_per_epoch, config.epochs)
        for index, (initial_epoch, end_epoch, steps, first_step) in enumerate(segments):
            # First, so that the state is on disk before any later callback can fail.
            saver = StepCheckpoint(store, config.checkpoint_steps, first_step, steps_per_epoch)
            # A freshly built pipeline per fit call: a seeded shuffle draws each pass's order
            # from a generator that lives with the dataset object, and anything that iterated
            # ``datasets.train`` (counting its batches for steps_per_epoch, a peek) has moved
            # that generator on; only a dataset nobody iterated yet gives batch k = f(k, seed).
            train_data = app.build_datasets(config).train
            stream = train_data.repeat().skip(first_step)
            fitted = model.fit(
                distribute.distribute_dataset(stream, strategy),
                validation_data=validation,
                epochs=end_epoch,
                initial_epoch=initial_epoch,
                steps_per_epoch=steps,
                shuffle=False,  # the pipeline shuffles (seeded); fit cannot shuffle a tf.data.Dataset
                callbacks=[saver, *shared, record, *callbacks],
                verbose=config.verbose,
            )
            for key, values in fitted.history.items():
                history.setdefault(key, []).extend(values)
            if model.stop_training:  # early stopping
                break
        train_seconds = time.perf_counter() - start
    print(f"training time: {train_seconds:.1f} s for {len(epochs_seen)} epoch(s)", flush=True)

    # The released model is float32 whatever the training precision: rebuild it and copy the weights.
    final = app.build_model(config)
    if config.average_checkpoints > 1:
        final.set_weights(average_checkpoint_weights(store, model, config.average_checkpoints))
    else:
        best = directory / "best.keras"
        if best.is_file():
            model.load_weights(best)
        final.set_weights(model.get_weights())
    model_path = directory / "model.keras"
    final.save(model_path)  # weights and architecture; no optimizer state (resuming reads checkpoints/)
    final.compile(**app.compile_kwargs(config))  # for evaluate()

    metrics = app.evaluate(final, config)
    print_metrics(metrics)
    record_file = {
        "app": app.name,
        "metrics": metrics,
        "epochs_run": [e + 1 for e in epochs_seen],
        "train_seconds": round(train_seconds, 1),
        "strategy": distribute.describe(strategy),
        "precision": config.precision,
        "command": command or command_line(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    if resuming:
        record_file["resumed_at_step"] = initial_step
    (directory / "metrics.json").write_text(json.dumps(record_file, indent=2) + "\n")
    return RunResult(
        run_dir=directory,
        model_path=model_path,
        metrics=metrics,
        history=history,
        initial_epoch=epochs_seen[0] if epochs_seen else config.epochs,
        train_seconds=train_seconds,
        strategy=distribute.describe(strategy),
        replicas=strategy.num_replicas_in_sync,
    )


def average_checkpoint_weights(store, model, count):
    """The mean of the model weights of the ``count`` newest step checkpoints (Vaswani et al.'s averaging).

    ``model`` is only a vessel to load each checkpoint into; its weights are
    overwritten. Raises :class:`CheckpointError` if fewer than ``count``
    checkpoints verify.
    """
    steps = store.steps()[:count]
    if len(steps) < count:
        raise CheckpointError(f"average_checkpoints={count} but {store.directory}/ holds {len(steps)} checkpoint(s)")
    total = None
    for step in steps:
        store.verify(step)
        model.load_weights(str(store.directory / f"step-{step:08d}.weights.h5"))
        weights = [np.asarray(w, np.float64) for w in model.get_weights()]
        total = weights if total is None else [t + w for t, w in zip(total, weights)]
    print(f"final weights: the average of the checkpoints of steps {sorted(steps)}", flush=True)
    return [(t / count).astype(w.dtype) for t, w in zip(total, model.get_weights())]


def load_checkpoint(path):
    """Load a ``.keras`` checkpoint, with a clear error when it is missing or unreadable."""
    path = Path(path)
    hint = "pass a .keras file written by `tfsuite train` (runs/<app>/<run>/model.keras)"
    if path.is_dir() and (path / "saved_model.pb").is_file():
        raise CheckpointError(
            f"{path} is a SavedModel (a release, what TF Serving loads), not a training checkpoint; {hint}, or "
            f"evaluate the release itself: `tfsuite evaluate <app> --models-dir <folder holding its release>`"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; {hint}")
    if path.suffix != ".keras":
        raise CheckpointError(f"checkpoint {path} is not a .keras file; {hint}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path} is not a readable .keras archive (corrupt or truncated?); {hint}")
    try:
        return keras.saving.load_model(path)
    except Exception as e:  # noqa: BLE001 - any failure inside Keras means the same thing to the user
        raise CheckpointError(f"checkpoint {path} could not be loaded ({type(e).__name__}: {e}); {hint}") from e


def evaluate_checkpoint(app, config, checkpoint):
    """Load ``checkpoint``, evaluate it on the app's test split and print the metrics."""
    strategy = _fit_strategy(config)
    set_seed(config.seed)
    with strategy.scope():
        model = load_checkpoint(checkpoint)
        if getattr(model, "optimizer", None) is None or not model.compiled:
            model.compile(**app.compile_kwargs(config))
    metrics = app.evaluate(model, config)
    print_metrics(metrics)
    return metrics



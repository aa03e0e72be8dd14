"""One training run through ``apps.trainer.train`` under a strategy, for ``test_distribute.py``.

Run as a script, in its own process, because logical CPU devices and
multi-worker collectives must be configured before TensorFlow starts::

    python tests/pipelines/distribute_worker.py --strategies default mirrored --logical-cpus 2 \\
        --runs-dir /tmp/runs --out /tmp/result.json
    TF_CONFIG='{...}' python tests/pipelines/distribute_worker.py --strategies multiworker ...
    python tests/pipelines/distribute_worker.py --parameter-server --out /tmp/ps.json

Each strategy trains the same tiny regression model (seeded weights, fixed
data, SGD with momentum) with the trainer every app uses, and the script
writes ``{strategy: {"describe", "replicas", "losses", "val_losses", "weights"}}``
as JSON: the loss of every step (recovered from Keras's running epoch mean)
and the trained weights.

``--parameter-server`` instead starts a worker and a parameter server in
this process, becomes the chief through ``TF_CONFIG`` and
``make_strategy("parameter_server")``, and runs two steps with a
``ClusterCoordinator`` (Keras ``fit`` cannot drive this strategy).
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

FEATURES = 6
SPLIT_SIZES = {"train": 96, "validation": 32, "test": 32}


class ToyApp:
    """The parts of the :class:`apps.app.App` declaration that training uses: data, model, compile."""

    name = "toy_regression"
    monitor, monitor_mode = "val_loss", "min"

    def default_run_name(self, config):
        return config.strategy

    def _split(self, config, split, training=False):
        rng = np.random.default_rng(list(SPLIT_SIZES).index(split))
        x = rng.normal(size=(SPLIT_SIZES[split], FEATURES)).astype("float32")
        y = np.sin(x @ np.linspace(-1.0, 1.0, FEATURES, dtype="float32"))[:, None]
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if training:
            ds = ds.shuffle(len(x), seed=config.seed, reshuffle_each_iteration=True)
        return ds.batch(config.batch_size)

    def build_datasets(self, config):
        from apps.app import Datasets

        return Datasets(*(self._split(config, s, training=s == "train") for s in SPLIT_SIZES))

    def build_model(self, config):
        import keras

        return keras.Sequential(
            [keras.Input((FEATURES,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)]
        )

    def compile_kwargs(self, config):
        import keras

        return {"optimizer": keras.optimizers.SGD(config.learning_rate, momentum=0.9), "loss": "mse"}

    def evaluate(self, model, config):
        results = model.evaluate(self.build_datasets(config).test, return_dict=True, verbose=0)
        return {f"test_{key}": float(value) for key, value in results.items()}

    from apps.app import App

    xla_faster, jit_compile, steps_per_epoch = App.xla_faster, App.jit_compile, App.steps_per_epoch
    del App


def _recorder():
    import keras

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.losses, self.val_losses, self._mean, self._steps = [], [], 0.0, 0

        def on_epoch_begin(self, epoch, logs=None):
            self._mean, self._steps = 0.0, 0

        def on_train_batch_end(self, batch, logs=None):
            # Keras reports the running mean of the epoch; undo it to get this step's loss.
            mean = float(logs["loss"])
            self.losses.append(mean * (batch + 1) - self._mean * batch)
            self._mean = mean

        def on_epoch_end(self, epoch, logs=None):
            self.val_losses.append(float(logs["val_loss"]))

        def on_train_end(self, logs=None):
            self.weights = [w.tolist() for w in self.model.get_weights()]

    return Record()


def check_parameter_server(out):
    import socket

    from pipelines.distribute import describe, make_strategy

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    cluster = {job: [f"127.0.0.1:{free_port()}"] for job in ("chief", "worker", "ps")}
    spec = tf.train.ClusterSpec(cluster)
    servers = [tf.distribute.Server(spec, job_name=job, task_index=0, start=True) for job in ("worker", "ps")]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})
    strategy = make_strategy("parameter_server")
    coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
    with strategy.scope():
        total = tf.Variable(0.0)

    def dataset_fn():
        return tf.data.Dataset.range(1, 5).map(lambda x: tf.cast(x, tf.float32)).batch(2).repeat()

    @tf.function
    def step(iterator):
        batch = next(iterator)
        strategy.run(lambda x: total.assign_add(tf.reduce_sum(x)), args=(batch,))

    iterator = iter(coordinator.create_per_worker_dataset(dataset_fn))
    for _ in range(2):
        coordinator.schedule(step, args=(iterator,))
    coordinator.join()
    result = {"describe": describe(strategy), "total": float(total.numpy()), "device": total.device}
    Path(out).write_text(json.dumps(result))
    del servers  # the in-process servers cannot be stopped; os._exit below ends the process
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategies", nargs="+")
    parser.add_argument("--parameter-server", action="store_true", help="the ClusterCoordinator check instead")
    parser.add_argument("--runs-dir")
    parser.add_argument("--out", required=True)
    parser.add_argument("--logical-cpus", type=int, default=0, help="split the CPU into N logical devices")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    if args.parameter_server:
        check_parameter_server(args.out)
        sys.stdout.flush()
        os._exit(0)  # in-process TF servers keep the interpreter from exiting
    if args.logical_cpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.logical_cpus)

    from apps.config import TrainConfig
    from apps.trainer import train

    results = {}
    for name in args.strategies:
        config = TrainConfig(
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=0.05, patience=0, verbose=0,
            deterministic=True, runs_dir=args.runs_dir, strategy=name,
        )  # fmt: skip
        record = _recorder()
        result = train(ToyApp(), config, callbacks=[record], command="distribute_worker")
        results[name] = {
            "describe": result.strategy,
            "replicas": result.replicas,
            "losses": record.losses,
            "val_losses": record.val_losses,
            "weights": record.weights,
            "run_dir": str(result.run_dir),
        }
    Path(args.out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tf.distribute strategies for every app (textbook section 11.3, data parallelism).

Data parallelism keeps one copy of the model per device (a *replica*), splits
every global batch between the replicas, and sums their gradients before the
one shared update, so ``N`` replicas on a batch of ``B`` take the same step as
one device on the same ``B`` examples.

``make_strategy(name)`` turns the ``--strategy`` option into a
``tf.distribute.Strategy``:

==================  ==========================================================
name                strategy
==================  ==========================================================
``auto``            TPU if one is found, else ``MirroredStrategy`` over all
                    GPUs (more than one), ``OneDeviceStrategy`` on the only
                    GPU, else the default strategy
``default``         ``tf.distribute.get_strategy()``: no distribution
``mirrored``        ``MirroredStrategy`` over all local GPUs, or over all
                    logical CPU devices when there is no GPU
``multiworker``     ``MultiWorkerMirroredStrategy``, cluster from ``TF_CONFIG``
                    (one worker, this machine, when ``TF_CONFIG`` is unset)
``tpu``             ``TPUStrategy``; TPU address from ``$TPU_NAME``, else a
                    TPU attached to this VM (``"local"``)
``parameter_server`` ``ParameterServerStrategy``, cluster from ``TF_CONFIG``
                    with ``chief``, ``worker`` and ``ps`` tasks
==================  ==========================================================

Batch sizes: ``batch_size`` in the app configs is the **global** batch, the
examples of one optimizer step over all replicas; each replica gets
``global_batch / num_replicas_in_sync`` of them (:func:`per_replica_batch_size`).
To keep the work per device fixed when adding devices, scale the global batch
with :func:`global_batch_size` (``per_replica * num_replicas_in_sync``).

Parity: at the same global batch, every strategy takes the steps one device
takes (``tests/pipelines/test_distribute.py``: 2 CPU replicas and 2 workers
on localhost match one device within 1e-5). One Keras detail: ``fit`` on a
model built under a strategy scope (any strategy but the default) opens the
training dataset once before the first epoch to build the model, so a
pipeline that reshuffles on every iteration starts from its second order.
Compare a distributed run with a one-device strategy (``mirrored`` on one
device), not with the default strategy, when the data is shuffled.

Example::

    strategy = make_strategy("auto")
    with strategy.scope():  # variables (model and optimizer) are created per replica
        model = build_model()
        model.compile(optimizer="adam", loss="mse")
    batch = global_batch_size(64, strategy)  # 64 examples per replica
    model.fit(distribute_dataset(dataset.batch(batch), strategy), epochs=3)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.parse
import warnings

import tensorflow as tf

from layers.validation import check_positive_int

__all__ = [
    "STRATEGIES",
    "StrategyError",
    "describe",
    "distribute_dataset",
    "global_batch_size",
    "is_chief",
    "make_strategy",
    "per_replica_batch_size",
]

STRATEGIES = ("auto", "default", "mirrored", "multiworker", "tpu", "parameter_server")
log = logging.getLogger(__name__)


class StrategyError(ValueError):
    """A strategy that cannot be built here: no TPU, no cluster, a malformed ``TF_CONFIG``."""


def make_strategy(name="auto", tpu=None):
    """Return the ``tf.distribute.Strategy`` for ``--strategy name``.

    Create it at the start of the program, before any other TensorFlow op:
    ``MultiWorkerMirroredStrategy`` configures collective ops, which TensorFlow
    accepts only before its runtime starts.

    Args:
        name: str, default ``"auto"``, one of :data:`STRATEGIES`.
        tpu: str or None, default ``None``. TPU name or ``grpc://host:port``
            address for ``"tpu"`` and ``"auto"``; ``None`` reads ``$TPU_NAME``
            and falls back to a TPU attached to this VM (``"local"``).

    Returns:
        The strategy. For ``"parameter_server"`` only the ``chief`` task gets
        one: ``worker`` and ``ps`` tasks start their TensorFlow server and
        serve the chief until they are killed (this call does not return).

    Raises:
        StrategyError: an unknown name, no TPU for ``"tpu"``, or a ``TF_CONFIG``
            that does not describe the cluster the strategy needs.
    """
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if name == "auto":
        strategy, reason = _auto_strategy(tpu)
    elif name == "default":
        strategy, reason = tf.distribute.get_strategy(), "requested"
    elif name == "mirrored":
        strategy, reason = _mirrored_strategy(), "requested"
    elif name == "multiworker":
        strategy, reason = _multi_worker_strategy(), "requested"
    elif name == "tpu":
        strategy, reason = _tpu_strategy(tpu), "requested"
    else:
        strategy, reason = _parameter_server_strategy(), "requested"
    log.info("strategy %s: %s (%s)", name, describe(strategy), reason)
    return strategy


def describe(strategy):
    """One line naming the strategy and its replicas, e.g. ``MirroredStrategy, 2 replicas (CPU:0, CPU:1)``."""
    replicas = strategy.num_replicas_in_sync
    text = f"{_name(strategy)}, {replicas} replica{'s' if replicas != 1 else ''}"
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        # Its public cluster_resolver is None on the chief; the strategy keeps the one it was built from.
        cluster = strategy._cluster_resolver.cluster_spec().as_dict()
        return f"{text} per worker, {len(cluster['worker'])} worker(s) and {len(cluster['ps'])} parameter server(s)"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        workers = max(len(cluster.get("worker", ())) + len(cluster.get("chief", ())), 1)
        text += f" on {workers} worker(s), this is {resolver.task_type or 'worker'} {resolver.task_id or 0}"
    try:
        devices = strategy.extended.worker_devices
    except RuntimeError:  # the default strategy has no device list
        devices = ()
    names = ", ".join(d.split("device:")[-1] for d in devices)
    return f"{text} ({names})" if names else text


def _name(strategy):
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "MultiWorkerMirroredStrategy"  # its class is CollectiveAllReduceStrategy
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return "ParameterServerStrategy"  # its class is ParameterServerStrategyV2
    name = type(strategy).__name__
    return "default strategy" if name == "_DefaultDistributionStrategy" else name


def global_batch_size(per_replica, strategy):
    """The global batch that gives each replica ``per_replica`` examples: ``per_replica * num_replicas_in_sync``.

    Scaling rule: the optimizer sees the mean gradient of the global batch,
    so adding replicas at a fixed per-replica batch makes each step average
    over more examples (raise the learning rate with care); adding replicas at
    a fixed global batch keeps every step, and so the trained weights, the
    same as on one device and only spreads the work.
    """
    return check_positive_int("per_replica", per_replica) * strategy.num_replicas_in_sync


def per_replica_batch_size(global_batch, strategy):
    """Examples each replica gets from a ``global_batch``: ``global_batch // num_replicas_in_sync``.

    Warns when ``global_batch`` is not a multiple of the replica count:
    ``tf.distribute`` then gives some replicas one example more, and since
    Keras averages the loss per replica before summing the replicas'
    gradients, those examples weigh less than the others. The same holds for
    a partial last batch of an epoch; use ``drop_remainder=True`` or a split
    size divisible by the global batch where exact parity matters.
    """
    global_batch = check_positive_int("global_batch", global_batch)
    replicas = strategy.num_replicas_in_sync
    if global_batch % replicas:
        warnings.warn(
            f"global batch size {global_batch} is not divisible by the {replicas} replicas of "
            f"{_name(strategy)}: replicas get {global_batch // replicas} or {global_batch // replicas + 1} "
            f"examples and the step is not the exact mean over the batch; use a multiple of {replicas}",
            stacklevel=2,
        )
    return global_batch // replicas


def distribute_dataset(dataset, strategy, global_batch=None):
    """``strategy.experimental_distribute_dataset(dataset)``: split each global batch between the replicas.

    Args:
        dataset: a batched ``tf.data.Dataset`` whose batches are global batches.
        strategy: the ``tf.distribute.Strategy``.
        global_batch: int or None; when given, checked with
            :func:`per_replica_batch_size` (warns if not divisible).

    Returns:
        A ``tf.distribute.DistributedDataset`` (Keras ``fit`` and ``evaluate``
        accept it as is); the default strategy returns the dataset itself.
        Across workers the dataset is sharded by element (``AutoShardPolicy.DATA``):
        every worker builds the same pipeline and keeps its part of every
        global batch, so the global batches equal those of one worker.
    """
    if global_batch is not None:
        per_replica_batch_size(global_batch, strategy)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def is_chief(strategy):
    """True on the task that writes checkpoints and logs: the chief, worker 0, or the only process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


# --- the strategies ---------------------------------------------------------------


def _auto_strategy(tpu):
    address = _tpu_address(tpu) if tpu is not None or _tpu_hint() else None
    if address is not None:
        try:
            return _tpu_strategy(address), f"auto: TPU {address!r}"
        except StrategyError as error:
            log.warning("auto: %s; falling back to GPUs/CPU", error)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([d.name for d in gpus]), f"auto: {len(gpus)} GPUs"
    if len(gpus) == 1:
        return tf.distribute.OneDeviceStrategy(gpus[0].name), "auto: one GPU"
    return tf.distribute.get_strategy(), "auto: no TPU or GPU"


def _mirrored_strategy():
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy([d.name for d in devices])


def _tf_config():
    """``TF_CONFIG`` as a dict (None when unset), checked for the ``cluster`` and ``task`` keys."""
    raw = os.environ.get("TF_CONFIG", "").strip()
    if not raw:
        return None
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise StrategyError(f"TF_CONFIG is not valid JSON ({error}); expected e.g. {example}") from None
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise StrategyError(f"TF_CONFIG needs a 'cluster' and a 'task' object, got {raw!r}; expected e.g. {example}")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster or not 0 <= int(index) < len(cluster[task_type]):
        raise StrategyError(
            f"TF_CONFIG task {task_type!r} index {index} is not in its cluster {cluster}; "
            f"each process sets 'task' to its own role and index"
        )
    return config


def _multi_worker_strategy():
    config = _tf_config()
    if config is None:
        log.info("multiworker: TF_CONFIG is not set, running as the only worker")
    elif config["cluster"].get("ps"):
        raise StrategyError(
            f"TF_CONFIG lists 'ps' tasks {config['cluster']['ps']}: that is a parameter-server cluster; "
            f"use --strategy parameter_server, or list only 'worker' (and 'chief') tasks for multiworker"
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return _KerasMultiWorkerMirroredStrategy(cluster_resolver=resolver)


class _KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3 ``fit`` hands it.

    With two or more workers, Keras 3.15 ``fit`` fails inside two
    ``strategy.reduce`` calls (keras-team/keras#20585): it reduces a whole
    ``(x, y)`` batch at once, which the collective reduce cannot take, and it
    reduces scalar metric values with ``axis=0``. Reducing one value at a
    time, and scalars over replicas only, is what both calls mean.
    """

    def reduce(self, reduce_op, value, axis=None):
        def reduce_one(v):
            rank = tf.nest.flatten(self.experimental_local_results(v))[0].shape.rank
            return super(_KerasMultiWorkerMirroredStrategy, self).reduce(reduce_op, v, None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


def _parameter_server_strategy():
    config = _tf_config()
    cluster = config["cluster"] if config else {}
    if not cluster.get("ps") or not cluster.get("worker"):
        raise StrategyError(
            "parameter_server needs a cluster: set TF_CONFIG with 'chief', 'worker' and 'ps' tasks, e.g. "
            '{"cluster": {"chief": ["host0:2222"], "worker": ["host1:2222"], "ps": ["host2:2222"]}, '
            '"task": {"type": "chief", "index": 0}}'
            + (f"; TF_CONFIG has no 'ps' or no 'worker' tasks: {cluster}" if config else "; TF_CONFIG is not set")
        )
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type in ("worker", "ps"):
        # Workers and parameter servers only execute what the chief schedules.
        log.info("parameter_server: serving as %s %d until killed", resolver.task_type, resolver.task_id)
        server = tf.distribute.Server(
            resolver.cluster_spec(),
            job_name=resolver.task_type,
            task_index=resolver.task_id,
            protocol=resolver.rpc_layer or "grpc",
            start=True,
        )
        server.join()
    return tf.distribute.ParameterServerStrategy(resolver)


def _tpu_hint():
    """Cheap signs of a TPU, checked before ``auto`` tries to connect to one."""
    return bool(
        os.environ.get("TPU_NAME")
        or os.environ.get("COLAB_TPU_ADDR")
        or os.path.exists("/dev/accel0")  # TPU VM chips (v2-v4)
        or tf.config.list_physical_devices("TPU")
    )


def _tpu_address(tpu):
    if tpu is not None:
        return tpu
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    return "" if os.environ.get("COLAB_TPU_ADDR") else "local"


def _check_reachable(address, timeout=10.0):
    """A ``grpc://host:port`` that nothing listens on would make TensorFlow wait forever: fail fast."""
    parsed = urllib.parse.urlparse(address)
    try:
        with socket.create_connection((parsed.hostname, parsed.port), timeout=timeout):
            pass
    except (OSError, ValueError, TypeError) as error:
        raise StrategyError(
            f"no TPU found: nothing answers at {address} ({error}); use --strategy auto or mirrored"
        ) from None


def _tpu_strategy(tpu):
    address = _tpu_address(tpu)
    if address.startswith("grpc://"):
        _check_reachable(address)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except Exception as error:  # noqa: BLE001 - ValueError, URLError, NotFoundError... all mean "no TPU here"
        detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise StrategyError(
            f"no TPU found: TPUClusterResolver(tpu={address!r}) failed with {type(error).__name__}: {detail}; "
            f"set $TPU_NAME to your TPU's name or grpc:// address, or use --strategy auto or mirrored"
        ) from error
    return tf.distribute.TPUStrategy(resolver)

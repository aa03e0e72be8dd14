"""pipelines.distribute: strategy choice, batch scaling, and data parallelism that changes nothing but speed.

The two training comparisons run ``tests/pipelines/distribute_worker.py`` in
subprocesses (logical devices and multi-worker collectives must be set up
before TensorFlow starts), all four at once to share the start-up time:

* ``reference``: one CPU device, ``--strategy multiworker`` (one worker) then ``mirrored`` (one replica);
* ``mirrored_2``: ``--strategy mirrored`` over 2 logical CPU devices;
* ``worker_0``, ``worker_1``: ``--strategy multiworker`` on 127.0.0.1 with ``TF_CONFIG``;
* ``parameter_server``: a chief, a worker and a parameter server in one process.

The first four train the same seeded model through ``apps.trainer.train``
with the same global batch (16); the per-step losses and the weights must agree.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from pipelines import distribute
from pipelines.distribute import StrategyError, make_strategy

WORKER = Path(__file__).with_name("distribute_worker.py")
REPO = Path(__file__).resolve().parents[2]


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _tf_config(ports, index):
    return json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]}, "task": {"type": "worker", "index": index}}
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Start the four training processes together; return ``{name: results}`` once all have finished."""
    tmp = tmp_path_factory.mktemp("distribute")
    ports = _free_ports(2)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TPU_NAME")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    jobs = {
        "reference": (["--strategies", "multiworker", "mirrored"], {}),
        "mirrored_2": (["--strategies", "mirrored", "--logical-cpus", "2"], {}),
        "worker_0": (["--strategies", "multiworker"], {"TF_CONFIG": _tf_config(ports, 0)}),
        "worker_1": (["--strategies", "multiworker"], {"TF_CONFIG": _tf_config(ports, 1)}),
        "parameter_server": (["--parameter-server"], {}),
    }
    processes = {}
    for name, (args, extra_env) in jobs.items():
        runs_dir = tmp / ("runs_multiworker" if name.startswith("worker") else f"runs_{name}")
        command = [sys.executable, str(WORKER), *args, "--runs-dir", str(runs_dir), "--out", str(tmp / f"{name}.json")]
        log = open(tmp / f"{name}.log", "w")
        process = subprocess.Popen(command, env={**env, **extra_env}, stdout=log, stderr=subprocess.STDOUT)
        processes[name] = (process, log)
    failed = []
    try:
        for name, (process, log) in processes.items():
            # A worker whose peer died would wait for it forever: bound the wait.
            if process.wait(timeout=900) != 0:
                failed.append(name)
    finally:
        for process, log in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    if failed:
        tails = {name: (tmp / f"{name}.log").read_text()[-3000:] for name in failed}
        pytest.fail(f"training processes {failed} failed:\n" + "\n".join(f"--- {k}\n{v}" for k, v in tails.items()))
    return {name: json.loads((tmp / f"{name}.json").read_text()) for name in jobs}


def _max_weight_diff(a, b):
    return max(float(np.max(np.abs(np.array(x) - np.array(y)))) for x, y in zip(a["weights"], b["weights"]))


def test_mirrored_over_two_cpu_devices_trains_to_the_weights_of_one_device(runs):
    one, two = runs["reference"]["mirrored"], runs["mirrored_2"]["mirrored"]
    assert one["replicas"] == 1 and one["describe"] == "MirroredStrategy, 1 replica (CPU:0)"
    assert two["replicas"] == 2 and two["describe"] == "MirroredStrategy, 2 replicas (CPU:0, CPU:1)"
    assert len(two["losses"]) == 12  # 2 epochs x 96 examples / global batch 16
    np.testing.assert_allclose(two["losses"], one["losses"], atol=1e-5)
    np.testing.assert_allclose(two["val_losses"], one["val_losses"], atol=1e-5)
    assert _max_weight_diff(one, two) < 1e-5
    # The model did train: the comparison is not between two untouched initialisations.
    assert np.mean(two["losses"][-4:]) < 0.5 * np.mean(two["losses"][:2])


def test_two_workers_on_localhost_give_the_loss_of_one_worker(runs):
    single = runs["reference"]["multiworker"]
    workers = [runs["worker_0"]["multiworker"], runs["worker_1"]["multiworker"]]
    assert single["describe"] == "MultiWorkerMirroredStrategy, 1 replica on 1 worker(s), this is worker 0 (CPU:0)"
    for index, worker in enumerate(workers):
        assert worker["replicas"] == 2
        description = f"MultiWorkerMirroredStrategy, 2 replicas on 2 worker(s), this is worker {index}"
        assert worker["describe"].startswith(description)
        np.testing.assert_allclose(worker["losses"], single["losses"], atol=1e-5)
        np.testing.assert_allclose(worker["val_losses"], single["val_losses"], atol=1e-5)
        assert _max_weight_diff(worker, single) < 1e-5
    # One worker with MultiWorkerMirroredStrategy is one device: the same run as mirrored on one device.
    np.testing.assert_allclose(single["losses"], runs["reference"]["mirrored"]["losses"], atol=1e-6)
    # Both workers ran the trainer with the same --runs-dir; only the chief (worker 0) writes the run folder.
    chief = Path(workers[0]["run_dir"])
    assert Path(workers[1]["run_dir"]) == chief / "worker_1"
    for name in ("model.keras", "metrics.json", "history.csv"):
        assert (chief / name).is_file() and (chief / "worker_1" / name).is_file()
    record = json.loads((chief / "metrics.json").read_text())
    assert record["strategy"].startswith("MultiWorkerMirroredStrategy, 2 replicas")


def test_parameter_server_strategy_keeps_variables_on_the_ps_task(runs):
    result = runs["parameter_server"]
    assert result["describe"] == "ParameterServerStrategy, 1 replica per worker, 1 worker(s) and 1 parameter server(s)"
    assert result["device"] == "/job:ps/replica:0/task:0/device:CPU:0"
    assert result["total"] == 10.0  # two scheduled steps summed the batches [1, 2] and [3, 4] on the worker


# --- choosing a strategy -----------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_unknown_strategy_names_the_choices():
    choices = r"\['auto', 'default', 'mirrored', 'multiworker', 'tpu', 'parameter_server'\]"
    with pytest.raises(StrategyError, match=rf"strategy must be one of {choices}, got 'horovod'"):
        make_strategy("horovod")


def test_auto_without_tpu_or_gpu_is_the_default_strategy(clean_env, caplog):
    assert not tf.config.list_logical_devices("GPU")  # this test describes the CPU-only machine
    with caplog.at_level(logging.INFO, logger="pipelines.distribute"):
        strategy = make_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert distribute.describe(strategy) == "default strategy, 1 replica"
    assert "strategy auto: default strategy, 1 replica (auto: no TPU or GPU)" in caplog.text
    assert make_strategy("default") is strategy


def test_mirrored_without_gpus_mirrors_the_cpu_devices(clean_env):
    strategy = make_strategy("mirrored")
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    assert [d.split("/", 4)[-1] for d in strategy.extended.worker_devices] == [c.lstrip("/") for c in cpus]
    assert distribute.is_chief(strategy)


def test_tpu_builds_its_resolver_and_says_when_there_is_no_tpu(clean_env):
    built = []
    resolver_cls = tf.distribute.cluster_resolver.TPUClusterResolver

    def spy(*args, **kwargs):
        built.append(resolver_cls(*args, **kwargs))
        return built[-1]

    clean_env.setattr(tf.distribute.cluster_resolver, "TPUClusterResolver", spy)
    with pytest.raises(StrategyError) as error:
        make_strategy("tpu")
    assert len(built) == 1 and isinstance(built[0], resolver_cls) and built[0].master() == ""  # the local TPU resolver
    message = str(error.value)
    assert message.startswith("no TPU found: TPUClusterResolver(tpu='local') failed with NotFoundError")
    assert message.endswith("use --strategy auto or mirrored")


def test_tpu_address_nothing_listens_on_fails_fast_and_auto_falls_back(clean_env, caplog):
    (port,) = _free_ports(1)
    clean_env.setenv("TPU_NAME", f"grpc://127.0.0.1:{port}")
    message = rf"no TPU found: nothing answers at grpc://127.0.0.1:{port} .*use --strategy auto or mirrored"
    with pytest.raises(StrategyError, match=message):
        make_strategy("tpu")
    with caplog.at_level(logging.WARNING, logger="pipelines.distribute"):
        strategy = make_strategy("auto")
    assert strategy is tf.distribute.get_strategy()
    assert "auto: no TPU found" in caplog.text and "falling back" in caplog.text


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("{not json", r"TF_CONFIG is not valid JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', r"TF_CONFIG needs a 'cluster' and a 'task' object"),
        (
            '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
            r"task 'worker' index 3 is not in its cluster",
        ),
        (
            '{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": "worker", "index": 0}}',
            r"TF_CONFIG lists 'ps' tasks \['b:1'\]: that is a parameter-server cluster; "
            r"use --strategy parameter_server",
        ),
    ],
)
def test_multiworker_rejects_a_bad_tf_config(clean_env, tf_config, message):
    clean_env.setenv("TF_CONFIG", tf_config)
    with pytest.raises(StrategyError, match=message):
        make_strategy("multiworker")


def test_parameter_server_needs_ps_tasks_in_tf_config(clean_env):
    needs = r"parameter_server needs a cluster: set TF_CONFIG with 'chief', 'worker' and 'ps' tasks"
    with pytest.raises(StrategyError, match=needs + ".*TF_CONFIG is not set"):
        make_strategy("parameter_server")
    clean_env.setenv(
        "TF_CONFIG", '{"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}'
    )
    no_ps = r".*TF_CONFIG has no 'ps' or no 'worker' tasks: \{'chief': \['a:1'\]"
    with pytest.raises(StrategyError, match=needs + no_ps):
        make_strategy("parameter_server")


@pytest.mark.parametrize(
    "cluster, task, chief",
    [
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), True),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), False),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("chief", 0), True),
        ({"chief": ["c:1"], "worker": ["a:1"]}, ("worker", 0), False),
    ],
)
def test_is_chief_picks_one_writer(clean_env, cluster, task, chief):
    clean_env.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task[0], "index": task[1]}}))
    # The cluster role comes from TF_CONFIG alone; no strategy (and no server) is needed to read it.
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    assert distribute.is_chief(types.SimpleNamespace(cluster_resolver=resolver)) is chief


# --- batch sizes and datasets --------------------------------------------------------


class _Replicas:
    """The one property the batch arithmetic reads, for replica counts this machine has no devices for."""

    def __init__(self, n):
        self.num_replicas_in_sync = n


def test_global_batch_scales_with_replicas_and_uneven_splits_warn(recwarn):
    assert distribute.global_batch_size(64, _Replicas(4)) == 256
    assert distribute.global_batch_size(64, tf.distribute.get_strategy()) == 64
    assert distribute.per_replica_batch_size(256, _Replicas(4)) == 64
    assert not recwarn.list
    uneven = r"global batch size 10 is not divisible by the 4 replicas .* get 2 or 3 examples .* use a multiple of 4"
    with pytest.warns(UserWarning, match=uneven):
        assert distribute.per_replica_batch_size(10, _Replicas(4)) == 2
    with pytest.raises(ValueError, match="per_replica must be a positive integer, got 0"):
        distribute.global_batch_size(0, _Replicas(2))


def test_distribute_dataset_splits_global_batches_between_replicas():
    dataset = tf.data.Dataset.range(12).batch(4)
    undistributed = distribute.distribute_dataset(dataset, tf.distribute.get_strategy())
    assert [batch.tolist() for batch in undistributed.as_numpy_iterator()][0] == [0, 1, 2, 3]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    distributed = distribute.distribute_dataset(dataset, strategy, global_batch=4)
    assert isinstance(distributed, tf.distribute.DistributedDataset)
    batches = [strategy.experimental_local_results(batch)[0].numpy().tolist() for batch in distributed]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]

"""The ``tfsuite`` command line and the shared run lifecycle (train, resume, evaluate, export, serve).

Runs use tiny ``--limit`` subsets of the real Fashion-MNIST and LeNet-5, so
they check the code path, not the accuracy (that is
``test_fashion_mnist_training.py``, marked slow).
"""

import json
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import trainer
from apps.checkpoints import CheckpointStore
from apps.cli import main
from apps.registry import UnknownAppError, app_names, get_app
from pipelines import fashion_mnist

SMOKE = ["--limit", "192", "--batch-size", "64", "--epochs", "1", "--verbose", "0", "--deterministic"]
TEST_ACCURACY_LINE = re.compile(r"^test_accuracy: (0\.\d{4}|1\.0000)$", re.MULTILINE)


def run_cli(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One real `tfsuite train` run on 192 examples, shared by the evaluate/export tests."""
    runs = tmp_path_factory.mktemp("runs")
    capture = _Capture()
    with capture:
        status = main(["train", "fashion_mnist", *SMOKE, "--runs-dir", str(runs)])
    return status, capture.text, runs / "fashion_mnist" / "lenet5"


class _Capture:
    """stdout capture usable from a module-scoped fixture (capsys is function-scoped)."""

    def __enter__(self):
        import io

        self._buffer, self._stdout = io.StringIO(), sys.stdout
        sys.stdout = self._buffer
        return self

    def __exit__(self, *exc):
        sys.stdout = self._stdout
        self.text = self._buffer.getvalue()


def test_registry_lists_apps_and_rejects_unknown_names():
    assert "fashion_mnist" in app_names()
    assert get_app("fashion_mnist").name == "fashion_mnist"
    with pytest.raises(UnknownAppError, match="unknown app 'mnist'; available apps: captioning, clip, code_generation, detection, fashion_mnist"):
        get_app("mnist")


def test_console_script_help_lists_commands_and_apps_without_importing_tensorflow():
    # The installed `tfsuite` entry point (setup.cfg console_scripts), in a fresh process.
    script = __import__("shutil").which("tfsuite") or f"{sys.executable} -m apps.cli"
    result = subprocess.run(f"{script} --help", shell=True, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    for text in ("train", "evaluate", "export", "serve", "demo", "data", "fashion_mnist", "translation", "--verbose"):
        assert text in result.stdout
    assert result.stderr == ""  # no TensorFlow start-up lines: it was never imported
    # What makes it answer at once: neither TensorFlow nor an app module is loaded.
    probe = (
        "import sys, contextlib, io\n"
        "from apps.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'gradio', 'apps')))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=600, check=True)
    assert loaded.stdout.strip() == "['apps', 'apps.cli', 'apps.config', 'apps.registry']", loaded.stdout


def test_app_descriptions_in_the_registry_match_the_apps():
    from apps.registry import app_description

    for name in app_names():
        assert app_description(name) == get_app(name).description


def test_commands_start_tensorflow_without_its_cpp_start_up_lines():
    script = __import__("shutil").which("tfsuite") or f"{sys.executable} -m apps.cli"
    quiet = subprocess.run(f"{script} data list", shell=True, capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    for line in ("cuInit", "I0000", "E0000", "absl::InitializeLog", "oneDNN custom operations"):
        assert line not in quiet.stderr, quiet.stderr
    verbose = subprocess.run(f"{script} --verbose data list", shell=True, capture_output=True, text=True, timeout=600)
    assert verbose.returncode == 0 and verbose.stdout == quiet.stdout


def test_command_help_lists_apps_and_fields(capsys):
    status, out, _ = run_cli(capsys, "train", "--help")
    assert status == 0 and "fashion_mnist" in out and "translation" in out
    status, out, _ = run_cli(capsys, "train", "fashion_mnist", "--help")
    assert status == 0 and "FashionMNISTConfig fields" in out
    for flag in ("--epochs", "--batch-size", "--learning-rate", "--augment, --no-augment", "--width", "--limit",
                 "--precision", "--checkpoint-steps", "--strategy"):  # fmt: skip
        assert flag in out
    status, out, _ = run_cli(capsys, "evaluate", "fashion_mnist", "--help")
    assert status == 0 and "--checkpoint" in out and "--batch-size" in out
    status, out, _ = run_cli(capsys, "demo", "--help")
    assert status == 0 and "--port" in out and "--host" in out
    status, out, _ = run_cli(capsys, "data", "--help")
    assert status == 0 and "tfsuite data build" in out and "--max-examples" in out and "tfsuite data list" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "fashion_mnist"], "unknown command 'fit'; commands: train, evaluate, export, serve, demo, data"),
        (["train", "mnist"], "unknown app 'mnist'; available apps: captioning, clip, code_generation, detection, fashion_mnist"),
        (["train"], "`tfsuite train` needs an app"),
        (["train", "fashion_mnist", "--batch-sise", "8"], "unknown option(s) --batch-sise"),
        (["train", "fashion_mnist", "--epochs", "x"], "--epochs expects int, got 'x'"),
        (["train", "fashion_mnist", "--model", "lenet6"], "model must be one of"),
        (["train", "fashion_mnist", "--width", "8"], "--width does not apply to lenet5; models that take it: vgg_small, resnet18"),
        (["evaluate", "fashion_mnist"], "cannot evaluate a released SavedModel; pass --checkpoint"),
        (["demo", "--colour", "red"], "unknown option(s) --colour"),
        (["train", "fashion_mnist", "--strategy", "horovod"], "strategy must be one of ['auto', 'default', 'mirrored'"),
        (["data"], "`tfsuite data` needs a command: build or list"),
        (["data", "download"], "unknown data command 'download'; data commands: build, list"),
        (["data", "build", "wikipedia"], "unknown corpus 'wikipedia'; choose one of"),
        (["data", "build", "code", "--max-examples", "0"], "--max-examples must be a positive integer, got 0"),
        (["data", "list", "--max-examples", "3"], "unknown option(s) --max-examples 3; valid options: --data-dir"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(capsys, argv, message):
    status, _, err = run_cli(capsys, *argv)
    assert status == 2
    assert err.startswith("tfsuite: error: ") and message in err
    if "--batch-sise" in argv:
        assert "valid options: --epochs --batch-size" in err


def test_missing_dataset_names_the_package(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ENV_VAR, str(tmp_path))
    status, _, err = run_cli(capsys, "train", "fashion_mnist", *SMOKE, "--runs-dir", str(tmp_path / "runs"))
    assert status == 1
    assert "apt-get install dataset-fashion-mnist" in err


def test_train_smoke_run_writes_the_run_folder_and_prints_test_accuracy(smoke_run):
    status, out, run = smoke_run
    assert status == 0
    assert "FashionMNISTConfig:" in out and re.search(r"\n  limit += 192\n", out)
    assert "strategy: default strategy, 1 replica; global batch 64 = 1 x 64 per replica" in out  # auto, no GPU here
    match = TEST_ACCURACY_LINE.search(out)
    assert match, out[-2000:]
    for name in ("config.json", "model.keras", "best.keras", "history.csv", "metrics.json"):
        assert (run / name).is_file(), name
    assert list((run / "logs").rglob("events.out.tfevents.*")), "no TensorBoard event files"
    assert not (run / "backup").exists(), "BackupAndRestore state must be gone after a finished run"
    record = json.loads((run / "metrics.json").read_text())
    assert record["metrics"]["test_accuracy"] == pytest.approx(float(match.group(1)), abs=1e-4)
    assert json.loads((run / "config.json").read_text())["limit"] == 192


def test_evaluate_reloads_the_checkpoint_and_reproduces_the_metric(capsys, smoke_run):
    _, train_out, run = smoke_run
    status, out, _ = run_cli(capsys, "evaluate", "fashion_mnist", "--checkpoint", str(run / "model.keras"))
    assert status == 0
    # Same config.json (limit 192) and same weights: the same test accuracy.
    assert TEST_ACCURACY_LINE.search(out).group(1) == TEST_ACCURACY_LINE.search(train_out).group(1)


def test_corrupt_or_missing_checkpoints_give_clear_errors(capsys, tmp_path, smoke_run):
    corrupt = tmp_path / "model.keras"
    corrupt.write_bytes(b"\x00" * 100)
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes((smoke_run[2] / "model.keras").read_bytes()[:2000])
    not_a_model = tmp_path / "empty.keras"
    with zipfile.ZipFile(not_a_model, "w") as archive:
        archive.writestr("readme.txt", "no model in here")
    cases = [
        (tmp_path / "nope.keras", "does not exist"),
        (tmp_path, "does not exist"),
        (smoke_run[2] / "config.json", "is not a .keras file"),
        (corrupt, "not a readable .keras archive"),
        (truncated, "not a readable .keras archive"),
        (not_a_model, "could not be loaded"),
    ]
    for path, message in cases:
        status, _, err = run_cli(capsys, "evaluate", "fashion_mnist", "--checkpoint", str(path))
        assert status == 1, (path, err)
        assert message in err and "tfsuite train" in err and str(path) in err
        with pytest.raises(trainer.CheckpointError, match=message):
            trainer.load_checkpoint(path)


class _InterruptAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.weights = [w.copy() for w in self.model.get_weights()]
        raise KeyboardInterrupt("simulated interruption after epoch 1")


class _RecordStart(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_train_begin(self, logs=None):
        # Runs after the trainer restored the step checkpoint (before fit).
        self.weights = [w.copy() for w in self.model.get_weights()]
        self.optimizer_steps = int(self.model.optimizer.iterations.numpy())

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_training_interrupted_after_an_epoch_resumes_from_the_next_epoch(tmp_path):
    app = get_app("fashion_mnist")
    config = app.Config(
        epochs=2, limit=128, batch_size=64, verbose=0, deterministic=True, runs_dir=str(tmp_path), run_name="resume"
    )
    interrupt = _InterruptAfterFirstEpoch()
    with pytest.raises(KeyboardInterrupt):
        trainer.train(app, config, callbacks=[interrupt])
    run = tmp_path / "fashion_mnist" / "resume"
    record_path = run / "checkpoints" / "step-00000002.json"  # the end of the first epoch (128 / 64 steps)
    assert json.loads(record_path.read_text())["epoch"] == 1

    record = _RecordStart()
    result = trainer.train(app, config, callbacks=[record])
    assert record.epochs == [1], "the rerun must start at epoch 2 (index 1), not from scratch"
    assert result.initial_epoch == 1
    for restored, saved in zip(record.weights, interrupt.weights):
        np.testing.assert_array_equal(restored, saved)
    # The optimizer state came back too: its step counter holds epoch 1's 2 steps (128 / 64).
    assert record.optimizer_steps == 2
    assert len(result.history["loss"]) == 1
    with (run / "history.csv").open() as f:
        assert [line.split(",")[0] for line in f.read().split()[1:]] == ["0", "1"]
    assert CheckpointStore(run / "checkpoints").steps() == [4, 2]  # kept: a later run may average or resume
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0


def test_export_writes_a_serving_savedmodel_and_serve_prints_the_command(capsys, tmp_path, smoke_run):
    run = smoke_run[2]
    models = tmp_path / "saved_models"
    status, out, err = run_cli(
        capsys, "export", "fashion_mnist", "--checkpoint", str(run / "model.keras"), "--models-dir", str(models)
    )
    assert status == 0, err
    version_dir = models / "fashion_mnist" / "1"
    assert (version_dir / "saved_model.pb").is_file() and (version_dir / "variables").is_dir()
    assert f"--model_base_path={models.resolve() / 'fashion_mnist'}" in out

    reloaded = tf.saved_model.load(str(version_dir))
    signature = reloaded.signatures["serving_default"]
    inputs = signature.structured_input_signature[1]
    assert list(inputs) == ["images"]
    assert inputs["images"].shape.as_list() == [None, 28, 28, 1] and inputs["images"].dtype == tf.float32
    images, _ = fashion_mnist.load_split("test")
    batch = (images[:16, ..., None] / 255.0).astype("float32")
    served = signature(images=tf.constant(batch))["probabilities"].numpy()
    model = keras.saving.load_model(run / "model.keras")
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(batch, training=False)))
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)

    manifest = json.loads((models / "fashion_mnist" / "MANIFEST.json").read_text())
    entry = manifest["versions"]["1"]
    assert manifest["latest"] == 1
    assert entry["test_metrics"] == json.loads((run / "metrics.json").read_text())["metrics"]
    assert entry["config"]["model"] == "lenet5" and entry["max_abs_diff_vs_keras"] < 1e-5
    assert entry["export_command"].endswith(f"--models-dir {models}")

    # The next export is version 2; an existing version folder is never overwritten.
    export = ["export", "fashion_mnist", "--checkpoint", str(run / "model.keras"), "--models-dir", str(models)]
    status, _, _ = run_cli(capsys, *export)
    assert status == 0 and (models / "fashion_mnist" / "2" / "saved_model.pb").is_file()
    status, _, err = run_cli(capsys, *export, "--version", "1")
    assert status == 1 and "already exists" in err

    status, out, _ = run_cli(capsys, "serve", "fashion_mnist", "--models-dir", str(models), "--port", "9000")
    assert status == 0
    assert (
        f"tensorflow_model_server --rest_api_port=9000 --model_name=fashion_mnist "
        f"--model_base_path={models.resolve() / 'fashion_mnist'}"
    ) in out
    assert "docker run" in out and "tensorflow/serving" in out
    if __import__("shutil").which("tensorflow_model_server") is None:
        assert "not installed on this machine" in out


def test_serve_without_an_export_says_what_to_run(capsys, tmp_path):
    status, _, err = run_cli(capsys, "serve", "fashion_mnist", "--models-dir", str(tmp_path))
    assert status == 2 and "tfsuite export fashion_mnist --checkpoint" in err


def test_train_under_a_mirrored_strategy(capsys, tmp_path):
    # No GPU here: MirroredStrategy over this machine's one CPU device, through the same trainer path.
    status, out, err = run_cli(
        capsys, "train", "fashion_mnist", *SMOKE, "--strategy", "mirrored", "--runs-dir", str(tmp_path)
    )
    assert status == 0, err
    assert "strategy: MirroredStrategy, 1 replica (CPU:0); global batch 64 = 1 x 64 per replica" in out
    assert TEST_ACCURACY_LINE.search(out)
    record = json.loads((tmp_path / "fashion_mnist" / "lenet5" / "metrics.json").read_text())
    assert record["strategy"] == "MirroredStrategy, 1 replica (CPU:0)"
    assert json.loads((tmp_path / "fashion_mnist" / "lenet5" / "config.json").read_text())["strategy"] == "mirrored"


def test_train_without_a_tpu_or_under_parameter_servers_says_why_before_any_work(capsys, tmp_path, monkeypatch):
    for name in ("TPU_NAME", "COLAB_TPU_ADDR"):
        monkeypatch.delenv(name, raising=False)
    status, _, err = run_cli(capsys, "train", "fashion_mnist", *SMOKE, "--strategy", "tpu", "--runs-dir", str(tmp_path))
    assert status == 1
    assert err.startswith("tfsuite: error: no TPU found: TPUClusterResolver(tpu='local')")
    assert "use --strategy auto or mirrored" in err and "Traceback" not in err
    assert not (tmp_path / "fashion_mnist").exists()
    status, _, err = run_cli(
        capsys, "train", "fashion_mnist", *SMOKE, "--strategy", "parameter_server", "--runs-dir", str(tmp_path)
    )
    assert status == 1
    assert "Keras 3 model.fit cannot train under ParameterServerStrategy" in err and "--strategy multiworker" in err


def test_data_build_and_list(capsys, tmp_path, monkeypatch):
    # The code corpus on a 300-function stand-in for the stdlib, 3 examples per split: seconds, not minutes.
    from pipelines.corpora import python_stdlib

    stdlib = tmp_path / "lib"
    stdlib.mkdir()
    (stdlib / "ops.py").write_text(
        "".join(f'def op_{i}(x):\n    """Return x shifted by {i} units."""\n    return x + {i}\n\n\n' for i in range(300))
    )
    monkeypatch.setattr(python_stdlib, "stdlib_dir", lambda: stdlib)
    data_dir = tmp_path / "tfds"
    status, out, err = run_cli(capsys, "data", "build", "code", "--data-dir", str(data_dir), "--max-examples", "3")
    assert status == 0, err
    lines = out.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("tfsuite_code 1.0.0"))  # after TFDS's own lines
    assert lines[first].startswith("tfsuite_code 1.0.0 (built in")
    counts = [line.split() for line in lines[first + 1 : first + 4]]
    assert counts == [["train", "3"], ["validation", "3"], ["test", "3"]]
    assert (data_dir / "max_examples_3" / "tfsuite_code" / "1.0.0").is_dir()

    status, out, err = run_cli(capsys, "data", "list", "--data-dir", str(data_dir / "max_examples_3"))
    assert status == 0, err
    assert out.splitlines()[0] == f"offline corpora in {data_dir / 'max_examples_3'}:"
    listed = {}
    for line in out.splitlines()[1:]:
        if line.split()[0].startswith("tfsuite_"):
            name = line.split()[0]
        else:
            listed[name] = line.strip()
    assert list(listed) == [
        "tfsuite_translation/en_de", "tfsuite_translation/en_ja", "tfsuite_summarization", "tfsuite_qa",
        "tfsuite_code", "tfsuite_captions", "tfsuite_speech",
    ]  # fmt: skip
    assert listed["tfsuite_code"] == "built: train 3  validation 3  test 3"
    assert listed["tfsuite_qa"] == "not built: tfsuite data build tfsuite_qa"
    assert "Docstring to function from the Python standard library." in out


def test_demo_port_in_use_or_out_of_range_says_so_and_suggests_another(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        status, _, err = run_cli(capsys, "demo", "--port", str(port))
    assert status == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "try --port" in err
    status, _, err = run_cli(capsys, "demo", "--port", "70000")
    assert status == 2 and "--port must be between 1 and 65535, got 70000" in err
    status, _, err = run_cli(capsys, "demo", "--port", "http")
    assert status == 2 and "invalid int value" in err


def test_a_saved_model_given_as_checkpoint_says_what_to_pass(capsys):
    release = next(p for p in (trainer.Path(__file__).resolve().parents[2] / "saved_models" / "fashion_mnist").iterdir()
                   if p.name.isdigit())  # fmt: skip
    status, _, err = run_cli(capsys, "evaluate", "fashion_mnist", "--checkpoint", str(release))
    assert status == 1 and "is a SavedModel (a release, what TF Serving loads), not a training checkpoint" in err
    assert "runs/<app>/<run>/model.keras" in err


@pytest.mark.parametrize("flag, value", [("--learning-rate", "nan"), ("--learning-rate", "inf"), ("--dropout=-inf", None)])
def test_non_finite_float_options_are_refused(capsys, flag, value):
    status, _, err = run_cli(capsys, "train", "fashion_mnist", *([flag] if value is None else [flag, value]))
    assert status == 2 and "expects a finite number" in err


def test_fashion_mnist_offers_the_vit_beside_the_cnns():
    from apps.config import parse_config
    from apps.image_classification import FashionMNISTConfig
    from layers.vision_transformer import VisionTransformer

    app = get_app("fashion_mnist")
    config = parse_config(FashionMNISTConfig, ["--model", "vit", "--dropout", "0.0"])
    model = app.build_model(config)
    # Built before any batch: the trainer's optimizer is made from these weights (the class token
    # was missing from it when the builder returned an unbuilt model).
    assert model.built and any(v.path.endswith("class_token") for v in model.trainable_variables)
    assert any(isinstance(layer, VisionTransformer) for layer in model._flatten_layers())
    assert model(np.zeros((2, 28, 28, 1), "float32")).shape == (2, 10)

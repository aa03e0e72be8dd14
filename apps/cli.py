"""The ``tfsuite`` console script: one command line for every app.

    tfsuite train    <app> [--field value ...]               train, keep the best checkpoint, test
    tfsuite evaluate <app> [--checkpoint runs/.../model.keras] test metrics of a checkpoint (default: the release)
    tfsuite export   <app> --checkpoint ... [--version N]     SavedModel for TF Serving
    tfsuite export   <app> --format tflite                     float and int8 TFLite from the latest release
    tfsuite evaluate <app> --format tflite-int8                test metrics of the exported TFLite model
    tfsuite serve    <app>                                     print the TF Serving command
    tfsuite demo     [--host 127.0.0.1] [--port 7860]          Gradio UI, one tab per app
    tfsuite data build [NAME ...] [--data-dir D] [--max-examples N]   build the offline corpora (TFDS)
    tfsuite data list  [--data-dir D]                          the corpora, built or not, with split counts

Config fields are overridden by name (``--batch-size 64`` sets ``batch_size``);
``tfsuite <command> --help`` lists the apps and their fields. ``--strategy``
(every app) picks the tf.distribute strategy: ``auto``, ``default``,
``mirrored``, ``multiworker``, ``tpu`` or ``parameter_server`` (see
``pipelines/distribute.py``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

# Only the registry at import time: it names the apps without importing them, so
# `tfsuite --help` answers without loading TensorFlow (seconds). Everything else is
# imported by the command that needs it.
from apps.registry import UnknownAppError, app_description, app_names, get_app_class

__all__ = ["main"]

COMMANDS = {
    "train": "train an app's model; prints test metrics (test_accuracy: ...) at the end",
    "evaluate": "evaluate a .keras checkpoint on the app's test split",
    "export": "write a SavedModel (serving_default signature) under <models-dir>/<app>/<version>/",
    "serve": "print the TF Serving command for the exported versions",
    "demo": "launch the Gradio UI with one tab per app (released models)",
    "data": "build the offline corpora as TFDS datasets (data build [NAME ...]) or list them (data list)",
}
DATA_COMMANDS = ("build", "list")
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "saved_models"  # also apps.releases.DEFAULT_MODELS_DIR
TFLITE_EVALUATE_FORMATS = ("tflite-float", "tflite-int8")
VERBOSE_FLAG = "--verbose"  # before the command: keep TensorFlow's C++ start-up log lines


class UsageError(Exception):
    """A command line that cannot run; printed as ``tfsuite: error: ...``, exit status 2."""


def _start_tensorflow_quietly():
    """Import TensorFlow and start its runtime with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ start-up lines (oneDNN notes, "Could not find cuda
    drivers", and on machines without a GPU an alarming ``failed call to
    cuInit`` error) go straight to file descriptor 2, past Python's logging
    and TF_CPP_MIN_LOG_LEVEL (measured with TF 2.21: the variable no longer
    silences them). ``tfsuite --verbose <command>`` keeps them.
    """
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import tensorflow as tf

        tf.config.list_physical_devices()  # the runtime and device start-up, where cuInit is tried
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _command_options(command):
    """A parser holding only ``command``'s own options (not the config fields)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    if command in ("evaluate", "export"):
        parser.add_argument(
            "--checkpoint",
            help="a .keras file written by `tfsuite train` (runs/<app>/<run>/model.keras); "
            + ("required unless --format tflite" if command == "export" else "default: evaluate the latest release"),
        )
        formats = ("saved_model", "tflite") if command == "export" else ("keras", "saved_model", *TFLITE_EVALUATE_FORMATS)
        parser.add_argument(
            "--format",
            choices=formats,
            default="saved_model" if command == "export" else None,
            help="export: a SavedModel from --checkpoint, or float + int8 TFLite models converted from the latest "
            "release (<models-dir>/<release>/tflite/); evaluate: keras (the --checkpoint), saved_model (the latest "
            "release's serving_default) or one of the release's TFLite models (default: keras with --checkpoint, "
            "else saved_model)",
        )
    if command in ("evaluate", "export", "serve", "demo"):
        parser.add_argument(
            "--models-dir",
            default=str(DEFAULT_MODELS_DIR),
            help="released models, TF Serving layout <dir>/<app>/<version>/",
        )
    if command == "evaluate":
        parser.add_argument(
            "--record", action="store_true",
            help="saved_model: write the figures into the release (MANIFEST.json release_evaluation and "
            "checks/<version>.json, the test slice its test re-scores)",
        )
    if command == "export":
        parser.add_argument(
            "--version", type=int, default=None, help="version folder (default: one more than the latest)"
        )
    if command == "serve":
        parser.add_argument("--port", type=int, default=8501, help="TF Serving REST port (default: 8501)")
    if command == "demo":
        parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
        parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    return parser


def _help_parser(command, app_name):
    """``tfsuite <command> <app>`` usage: the command's options and the app config's fields."""
    from apps.config import add_config_arguments

    app_cls = get_app_class(app_name)
    parser = argparse.ArgumentParser(
        prog=f"tfsuite {command} {app_name}",
        description=f"{COMMANDS[command]}. App {app_name}: {app_cls.description}.",
        parents=[_command_options(command)],
    )
    if command in ("train", "evaluate", "export"):
        group = parser.add_argument_group(
            f"{app_cls.Config.__name__} fields"
            + (" (defaults: the checkpoint run's config.json, when present)" if command != "train" else "")
        )
        add_config_arguments(group, app_cls.Config)
    return parser


def _print_help(command=None, app=None):
    if command == "demo":
        _demo_parser().print_help()
        return
    if command == "data":
        for action in DATA_COMMANDS:
            _data_parser(action).print_help()
            print()
        return
    if command and app:
        _help_parser(command, app).print_help()
        return
    commands = [command] if command else list(COMMANDS)
    print("usage: tfsuite [--verbose] <command> <app> [--field value ...]\n")
    print("commands:")
    for name in commands:
        print(f"  {name:<9} {COMMANDS[name]}")
    print("\napps:")
    for name in app_names():
        print(f"  {name:<14} {app_description(name)}")
    print("\nEvery config field of an app is a flag: `tfsuite <command> <app> --help` lists them.")
    print("--verbose (before the command) keeps TensorFlow's C++ start-up log lines.")
    print("\nexamples:\n  tfsuite train fashion_mnist --model lenet5 --epochs 5")
    print("  tfsuite evaluate fashion_mnist --checkpoint runs/fashion_mnist/lenet5/model.keras")
    print("  tfsuite export fashion_mnist --checkpoint runs/fashion_mnist/lenet5/model.keras")
    print("  tfsuite train fashion_mnist --strategy mirrored   # all GPUs (or CPU devices) of this machine")
    print("  tfsuite demo --port 7860")
    print("  tfsuite data build translation --max-examples 100")
    print("  tfsuite data list")


def _demo_parser():
    return argparse.ArgumentParser(
        prog="tfsuite demo", description=COMMANDS["demo"], parents=[_command_options("demo")], exit_on_error=False
    )


def _parse(command, app, argv):
    """Split ``argv`` into the command's options and the app config (with the run's config as base)."""
    from apps.config import ConfigError, load_config, parse_config

    try:
        options, rest = _command_options(command).parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    if command == "evaluate" and options.format is None:
        options.format = "keras" if options.checkpoint else "saved_model"
    tflite = (getattr(options, "format", None) or "").startswith("tflite")
    if tflite and not app.supports_tflite:
        raise UsageError(f"app {app.name} has no TFLite export; --format saved_model (export) or keras (evaluate)")
    if command == "export" and not options.checkpoint and not tflite:
        raise UsageError(f"`tfsuite export {app.name}` needs --checkpoint runs/{app.name}/<run>/model.keras")
    if command == "evaluate" and options.record and options.format != "saved_model":
        raise UsageError("--record writes a release's own figures: it needs --format saved_model (the default without --checkpoint)")
    if command == "evaluate" and options.format == "keras" and not options.checkpoint:
        raise UsageError(f"`tfsuite evaluate {app.name} --format keras` needs --checkpoint runs/{app.name}/<run>/model.keras")
    if command == "serve":
        if rest:
            raise UsageError(f"unknown option(s) {' '.join(rest)}; valid options: --models-dir --port")
        return options, None
    base = None
    if getattr(options, "checkpoint", None):
        run_config = Path(options.checkpoint).parent / "config.json"
        if run_config.is_file():
            base = load_config(app.Config, run_config)
    try:
        config = parse_config(app.Config, rest, base=base, prog=f"tfsuite {command} {app.name}")
    except ConfigError as e:
        command_flags = [a for action in _command_options(command)._actions for a in action.option_strings]
        if command_flags and "unknown option" in str(e):
            raise UsageError(f"{e} {' '.join(command_flags)}") from None
        raise
    return options, config


def _run_train(app, options, config):
    from apps.trainer import train

    train(app, config, command=options.command)


def _run_evaluate(app, options, config):
    from apps.trainer import evaluate_checkpoint, print_metrics

    if options.format in TFLITE_EVALUATE_FORMATS:
        release = Path(options.models_dir) / app.release_name(config)
        print_metrics(app.evaluate_tflite(release, options.format.split("-")[1], config))
        return
    if options.format == "saved_model":
        from apps.releases import latest_version_dir

        version_dir = latest_version_dir(options.models_dir, app.release_name(config))
        print(f"evaluating the released SavedModel {version_dir}/ (serving_default) on the test split", flush=True)
        try:
            metrics = app.evaluate_saved_model(version_dir, config, record=options.record)
        except NotImplementedError as e:
            raise UsageError(str(e)) from None
        print_metrics(metrics)
        return
    evaluate_checkpoint(app, config, options.checkpoint)


def _run_export_tflite(app, options, config):
    from apps.releases import latest_version_dir

    release = Path(options.models_dir) / app.release_name(config)
    try:
        version_dir = release / str(options.version) if options.version else latest_version_dir(release.parent, release.name)
    except FileNotFoundError:
        version_dir = release
    if not (version_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(
            f"no released SavedModel in {version_dir}/ to convert; export one first: "
            f"`tfsuite export {app.name} --checkpoint runs/{app.name}/<run>/model.keras`"
        )
    for kind, path in app.export_tflite(version_dir, release / "tflite").items():
        print(f"wrote {kind} TFLite model {path} ({path.stat().st_size / 1e6:.1f} MB)")


def _run_export(app, options, config):
    from apps import export, releases, trainer

    if options.format == "tflite":
        _run_export_tflite(app, options, config)
        return
    app_dir = Path(options.models_dir) / app.release_name(config)
    version = options.version or releases.next_version(app_dir)
    model = trainer.load_checkpoint(options.checkpoint)
    directory = export.export_saved_model(app, model, config, app_dir / str(version))
    diff = export.check_export(app, model, config, directory, app.serving_example(config))
    entry = releases.release_entry(app, config, options.checkpoint, directory, diff, command=options.command)
    manifest = releases.write_manifest(app_dir, version, entry)
    print(f"exported {directory}")
    print(f"reloaded serving_default matches the Keras model: max |difference| = {diff:.2e}")
    print(f"manifest: {manifest}")
    _print_serving(app, app_dir, 8501)


def _print_serving(app, app_dir, port):
    from apps.releases import serving_commands

    commands = serving_commands(Path(app_dir).name, app_dir, port)  # the release name is the served model's
    specs = app.serving_signature(app.Config())
    body = ", ".join(f'"{name}": <{spec.dtype.name} array {tuple(spec.shape)}>' for name, spec in specs.items())
    print("serve with TF Serving:")
    print(f"  {commands['tensorflow_model_server']}")
    print("or with docker:")
    print(f"  {commands['docker']}")
    print(f"then POST {{\"inputs\": {{{body}}}}} to {commands['rest_url']}")


def _run_serve(app, options, config):
    from apps.releases import next_version

    app_dir = Path(options.models_dir) / app.release_name(app.Config())
    if next_version(app_dir) == 1:
        raise UsageError(
            f"no exported versions under {app_dir}/; run `tfsuite export {app.name} --checkpoint <model.keras>` first"
        )
    _print_serving(app, app_dir, options.port)
    if shutil.which("tensorflow_model_server") is None:
        print(
            "note: tensorflow_model_server is not installed on this machine (nor is it a pip package); "
            "run the command where TF Serving is installed, or use the docker image tensorflow/serving."
        )


def _check_port(host, port):
    """UsageError unless ``port`` is a valid TCP port that is free on ``host`` (suggesting a free one)."""
    import socket

    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as e:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as free:
                try:
                    free.bind((host, 0))
                    hint = f"; try --port {free.getsockname()[1]} (free now)"
                except OSError:
                    hint = ""
            raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}){hint}") from None


def _run_demo(argv):
    try:
        options, rest = _demo_parser().parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    if rest:
        raise UsageError(f"unknown option(s) {' '.join(rest)}; valid options: --host --port --models-dir")
    _check_port(options.host, options.port)
    from apps.ui import launch

    launch(host=options.host, port=options.port, models_dir=options.models_dir)


def _data_parser(action):
    parser = argparse.ArgumentParser(
        prog=f"tfsuite data {action}",
        description="build the offline corpora as TFDS datasets and print their split counts"
        if action == "build"
        else "list the offline corpora: version, description, and split counts where built",
        allow_abbrev=False,
        exit_on_error=False,
    )
    if action == "build":
        parser.add_argument(
            "names", nargs="*", metavar="NAME", help="corpora to build (default: all), e.g. code, qa, translation/en_ja"
        )
        parser.add_argument(
            "--max-examples",
            type=int,
            default=None,
            help="cap every split (smoke build, kept under <data-dir>/max_examples_N)",
        )
    parser.add_argument(
        "--data-dir", default=None, help="TFDS data dir (default: $TFSUITE_DATA_DIR or <repo>/data/tfds)"
    )
    return parser


def _run_data(argv):
    if not argv or argv[0].startswith("-"):
        raise UsageError(f"`tfsuite data` needs a command: {' or '.join(DATA_COMMANDS)} (tfsuite data --help)")
    action, rest = argv[0], argv[1:]
    if action not in DATA_COMMANDS:
        raise UsageError(f"unknown data command {action!r}; data commands: {', '.join(DATA_COMMANDS)}")
    parser = _data_parser(action)
    try:
        options, unknown = parser.parse_known_args(rest)
    except argparse.ArgumentError as e:
        raise UsageError(str(e)) from None
    if unknown:
        valid = [a for action_ in parser._actions for a in action_.option_strings if a not in ("-h", "--help")]
        raise UsageError(f"unknown option(s) {' '.join(unknown)}; valid options: {' '.join(valid)}")
    from pipelines.corpora import build as corpora

    if action == "list":
        _list_corpora(options.data_dir)
        return
    if options.max_examples is not None and options.max_examples < 1:
        raise UsageError(f"--max-examples must be a positive integer, got {options.max_examples}")
    names = options.names or [None]
    try:
        for name in names:
            corpora.dataset_names(name)  # an unknown name fails before any corpus is built
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name in names:
        corpora.build(name, data_dir=options.data_dir, max_examples=options.max_examples)


def _list_corpora(data_dir):
    import tensorflow_datasets as tfds

    from pipelines.corpora.build import dataset_names
    from pipelines.corpora.sources import data_dir as default_data_dir

    root = default_data_dir(data_dir)
    print(f"offline corpora in {root}:")
    for full_name in dataset_names():
        builder = tfds.builder(full_name, data_dir=str(root))
        summary = (type(builder).__doc__ or "").strip().splitlines()[0]
        print(f"  {full_name:<27} {str(builder.info.version):<6} {summary}")
        if builder.is_prepared():
            splits = builder.info.splits
            names = [split for split in ("train", "validation", "test") if split in splits]
            counts = "  ".join(f"{split} {splits[split].num_examples:,d}" for split in names)
            print(f"  {'':<27} {'':<6} built: {counts}")
        else:
            print(f"  {'':<27} {'':<6} not built: tfsuite data build {full_name}")


RUNNERS = {"train": _run_train, "evaluate": _run_evaluate, "export": _run_export, "serve": _run_serve}


def main(argv=None):
    """Entry point of the ``tfsuite`` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] == VERBOSE_FLAG
    if verbose:
        argv = argv[1:]
    wants_help = any(a in ("-h", "--help") for a in argv)
    from apps.config import ConfigError  # no TensorFlow: config does not import it

    try:
        if not argv or argv[0] in ("-h", "--help"):
            _print_help()
            return 0
        command, args = argv[0], argv[1:]
        if command not in COMMANDS:
            raise UsageError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
        if not verbose and not os.environ.get("TFSUITE_VERBOSE"):
            _start_tensorflow_quietly()
        if command in ("demo", "data"):
            if wants_help:
                _print_help(command)
                return 0
            (_run_demo if command == "demo" else _run_data)(args)
            return 0
        if not args or args[0].startswith("-"):
            if wants_help:
                _print_help(command)
                return 0
            raise UsageError(
                f"`tfsuite {command}` needs an app: tfsuite {command} <app> [options]; apps: {', '.join(app_names())}"
            )
        app_cls = get_app_class(args[0])
        if wants_help:
            _print_help(command, args[0])
            return 0
        app = app_cls()
        options, config = _parse(command, app, args[1:])
        options.command = shlex.join(["tfsuite", *argv])  # recorded in metrics.json / MANIFEST.json
        RUNNERS[command](app, options, config)
        return 0
    except (UsageError, UnknownAppError, ConfigError) as e:
        print(f"tfsuite: error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        # Missing data, an existing export folder, a corrupt checkpoint, no TPU: one line
        # that says what to do. Anything else keeps its traceback.
        from apps.trainer import CheckpointError
        from pipelines.distribute import StrategyError

        clear = (CheckpointError, StrategyError, FileNotFoundError, FileExistsError)
        if isinstance(e, clear) and not os.environ.get("TFSUITE_DEBUG"):
            print(f"tfsuite: error: {e}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())

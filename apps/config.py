"""Typed run configs: dataclasses whose fields the command line overrides by name.

Every app declares one dataclass (subclassing :class:`TrainConfig`) holding
its hyperparameters (STYLE.md convention 6). ``--batch-size 64`` sets
``batch_size``; values are converted with the field's annotation: ``int``,
``float``, ``str``, ``bool`` (``--flag`` / ``--no-flag``), ``tuple[int, ...]``
(``--sizes 3 5 7``), and ``Optional[...]`` (``--width none``). An unknown flag
raises :class:`ConfigError` listing the valid ones.

Example::

    @dataclass
    class MyConfig(TrainConfig):
        hidden: tuple[int, ...] = (64, 64)

    config = parse_config(MyConfig, ["--epochs", "3", "--hidden", "32", "16"])
    print_config(config)
    save_config(config, "runs/my_app/run/config.json")
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from layers.validation import check_choice, check_positive_float, check_positive_int

__all__ = [
    "PRECISIONS",
    "ConfigError",
    "TrainConfig",
    "add_config_arguments",
    "config_fields",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "option",
    "parse_config",
    "print_config",
    "save_config",
    "valid_flags",
]


PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


class ConfigError(ValueError):
    """A config override that cannot be applied (unknown flag or bad value)."""


def option(default, help):  # noqa: A002 - mirrors argparse's keyword
    """A dataclass field with a default and a help line shown by ``--help``."""
    if isinstance(default, (list, dict, set)):
        raise TypeError("use a tuple for sequence defaults so configs stay immutable")
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Fields every trainable app shares; apps subclass it and add their own."""

    epochs: int = option(10, "number of training epochs")
    batch_size: int = option(128, "examples per training step (global: split between the strategy's replicas)")
    learning_rate: float = option(1e-3, "peak learning rate of the optimizer")
    seed: int = option(1234, "seed for weights, shuffling and augmentation (keras.utils.set_random_seed)")
    patience: int = option(5, "early stopping: epochs without validation improvement (0 disables)")
    limit: typing.Optional[int] = option(None, "use only the first N examples of each split (smoke runs)")
    deterministic: bool = option(False, "deterministic tf.data element order (tests)")
    run_name: str = option("", "run folder under <runs-dir>/<app>/ (default: chosen by the app)")
    runs_dir: str = option("runs", "root folder for checkpoints, logs and configs")
    verbose: int = option(1, "Keras fit verbosity: 1 progress bar, 2 one line per epoch, 0 silent")
    # The names are pipelines.distribute.STRATEGIES (not imported here: it imports TensorFlow,
    # and configs are read by `tfsuite --help`); tests/apps/test_config.py checks they agree.
    strategy: str = option(
        "auto",
        "tf.distribute strategy: auto, default, mirrored, multiworker, tpu, parameter_server "
        "(default: auto, see pipelines/distribute.py)",
    )
    precision: str = option(
        "float32",
        "float32, mixed_bfloat16 (bf16 matmuls: CPUs with AVX512-BF16/AMX, TPUs) or mixed_float16 (GPUs, with "
        "loss scaling), or auto (bf16 where the chip has it, else float32: apps.trainer.resolve_precision); "
        "weights stay float32 and the saved model is float32 (default: float32)",
    )
    jit_compile: typing.Optional[bool] = option(
        None, "compile the training step with XLA (default: the app's measured choice for the precision)"
    )
    steps_per_epoch: typing.Optional[int] = option(
        None, "batches per epoch, read from one continuous stream of shuffled passes (none: one pass over the split)"
    )
    checkpoint_steps: int = option(
        0, "also save a resumable checkpoint every N training steps (0: at the end of each epoch only)"
    )
    keep_checkpoints: int = option(2, "step checkpoints kept in <run>/checkpoints/ (the newest ones)")
    average_checkpoints: int = option(
        0, "final model = the average of the N newest step checkpoints (0 or 1: the best epoch's weights)"
    )

    def __post_init__(self):
        try:
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"{f.name} must be a finite number, got {value!r}")
            check_positive_int("epochs", self.epochs)
            check_positive_int("batch_size", self.batch_size)
            check_positive_float("learning_rate", self.learning_rate)
            if self.limit is not None:
                check_positive_int("limit", self.limit)
            if self.patience < 0:
                raise ValueError(f"patience must be >= 0 (0 disables early stopping), got {self.patience}")
            check_choice("verbose", self.verbose, (0, 1, 2))
            from pipelines.distribute import STRATEGIES

            if self.strategy not in STRATEGIES:
                raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {self.strategy!r}")
            if self.precision not in PRECISIONS:
                raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
            if self.steps_per_epoch is not None:
                check_positive_int("steps_per_epoch", self.steps_per_epoch)
            for name in ("checkpoint_steps", "average_checkpoints"):
                if isinstance(getattr(self, name), bool) or getattr(self, name) < 0:
                    raise ValueError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
            check_positive_int("keep_checkpoints", self.keep_checkpoints)
            if self.average_checkpoints > self.keep_checkpoints:
                raise ValueError(
                    f"average_checkpoints={self.average_checkpoints} needs keep_checkpoints >= "
                    f"{self.average_checkpoints} (now {self.keep_checkpoints})"
                )
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _flag(name):
    return "--" + name.replace("_", "-")


def config_fields(config_cls):
    """Return ``[(field, resolved_type)]`` for a config dataclass (annotations resolved)."""
    hints = typing.get_type_hints(config_cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(config_cls)]


def _unwrap_optional(annotation):
    """Return ``(inner_type, is_optional)`` for ``Optional[T]`` / ``T | None``."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
        raise TypeError(f"unsupported config annotation {annotation}: only Optional[T] unions")
    return annotation, False


def _scalar_parser(kind, optional, flag):
    def parse(text):
        if optional and text.lower() in ("none", "null"):
            return None
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"{flag} expects true/false, got {text!r}")
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} expects {kind.__name__}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{flag} expects a finite number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _argument_spec(name, annotation, default):
    """argparse keyword arguments for one dataclass field."""
    flag = _flag(name)
    kind, optional = _unwrap_optional(annotation)
    help_default = "none" if default is None else default
    if kind is bool:
        # --flag / --no-flag; an Optional[bool] left at None lets the app decide.
        return {"action": argparse.BooleanOptionalAction, "default": default}
    if typing.get_origin(kind) is tuple:
        args = typing.get_args(kind)
        variadic = len(args) == 2 and args[1] is Ellipsis
        element = args[0]
        if not variadic and len(set(args)) != 1:
            raise TypeError(f"field {name}: tuples must hold one element type, got {kind}")
        return {
            "type": _scalar_parser(element, False, flag),
            "nargs": "+" if variadic else len(args),
            "metavar": element.__name__.upper(),
            "default": default,
            "help_default": help_default,
        }
    if kind not in (int, float, str):
        raise TypeError(f"field {name}: unsupported config type {annotation}")
    return {
        "type": _scalar_parser(kind, optional, flag),
        "metavar": kind.__name__.upper(),
        "default": default,
        "help_default": help_default,
    }


def add_config_arguments(parser, config_cls, defaults=None):
    """Add one ``--field-name`` option per dataclass field to ``parser``.

    Args:
        parser: ``argparse.ArgumentParser`` or argument group.
        config_cls: the config dataclass.
        defaults: optional config instance whose values become the defaults
            (for example a config loaded from a run folder).
    """
    for f, annotation in config_fields(config_cls):
        default = getattr(defaults, f.name) if defaults is not None else _field_default(f)
        spec = _argument_spec(f.name, annotation, default)
        shown = spec.pop("help_default", None)
        help_text = f.metadata.get("help", "")
        if "default" in help_text:
            pass  # the help line already says what the default is
        elif "action" not in spec:
            help_text = f"{help_text} (default: {shown})"
        elif default is None:
            help_text = f"{help_text} (default: chosen by the app)"
        else:
            help_text = f"{help_text} (default: {'on' if default else 'off'})"
        parser.add_argument(_flag(f.name), dest=f.name, help=help_text, **spec)
    return parser


def _field_default(f):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name} needs a default so that every flag is optional")


def valid_flags(config_cls):
    """The command-line flags a config accepts, in declaration order."""
    return [_flag(f.name) for f in dataclasses.fields(config_cls)]


def parse_config(config_cls, argv, base=None, prog=None):
    """Return a ``config_cls`` instance with ``argv`` overrides applied.

    Args:
        config_cls: the config dataclass.
        argv: list of str, e.g. ``["--batch-size", "64", "--no-augment"]``.
        base: optional instance supplying the values not overridden.
        prog: program name for messages.

    Raises:
        ConfigError: an unknown flag (the message lists the valid ones) or a
            value that does not convert to the field's type.
    """
    parser = argparse.ArgumentParser(prog=prog, add_help=False, exit_on_error=False, allow_abbrev=False)
    add_config_arguments(parser, config_cls, base)
    try:
        namespace, unknown = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as e:
        raise ConfigError(str(e)) from None
    flags = [a for a in unknown if a.startswith("-")]
    if flags:
        raise ConfigError(
            f"unknown option(s) {' '.join(flags)} for {config_cls.__name__}; "
            f"valid options: {' '.join(valid_flags(config_cls))}"
        )
    if unknown:
        raise ConfigError(
            f"unexpected value(s) {' '.join(unknown)}: every value follows its --option, "
            f"and booleans take none (--flag / --no-flag)"
        )
    values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(config_cls)}
    return config_from_dict(config_cls, values)


def config_to_dict(config):
    """A JSON-ready dict of the config (tuples become lists)."""
    return dataclasses.asdict(config)


def config_from_dict(config_cls, values):
    """Build ``config_cls`` from a dict, converting lists back to tuples.

    Unknown keys raise :class:`ConfigError`, so a stale ``config.json`` is not
    silently half-applied.
    """
    known = {f.name: annotation for f, annotation in config_fields(config_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown config field(s) {unknown} for {config_cls.__name__}; valid fields: {list(known)}"
        )
    converted = {}
    for name, value in values.items():
        kind, _ = _unwrap_optional(known[name])
        if typing.get_origin(kind) is tuple and value is not None:
            value = tuple(value)
        converted[name] = value
    return config_cls(**converted)


def print_config(config, file=None):
    """Print the config as aligned ``name = value`` lines (at the start of a run)."""
    lines = [f"{type(config).__name__}:"]
    width = max(len(f.name) for f in dataclasses.fields(config))
    for f in dataclasses.fields(config):
        lines.append(f"  {f.name.ljust(width)} = {getattr(config, f.name)!r}")
    print("\n".join(lines), file=file, flush=True)


def save_config(config, path):
    """Write the config as JSON (saved next to the model)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=False) + "\n")
    return path


def load_config(config_cls, path):
    """Read a config JSON written by :func:`save_config`."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from None
    return config_from_dict(config_cls, values)

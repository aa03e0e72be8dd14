import json
import re
import typing
from dataclasses import dataclass

import pytest

from apps.config import (
    ConfigError,
    TrainConfig,
    load_config,
    option,
    parse_config,
    print_config,
    save_config,
    valid_flags,
)


@dataclass
class ToyConfig(TrainConfig):
    model: str = option("lenet5", "model name")
    augment: bool = option(True, "augment")
    dropout: float = option(0.5, "dropout rate")
    sizes: tuple[int, ...] = option((32, 64), "channel sizes")
    kernel: tuple[int, int] = option((3, 3), "kernel size")
    width: typing.Optional[int] = option(None, "width, None = app default")
    small_input: typing.Optional[bool] = option(None, "stem for small images, None = app default")


def test_defaults_without_flags():
    assert parse_config(ToyConfig, []) == ToyConfig()
    assert ToyConfig().strategy == "auto"
    assert parse_config(ToyConfig, ["--strategy", "mirrored"]).strategy == "mirrored"


def test_overrides_convert_types_from_annotations():
    config = parse_config(
        ToyConfig,
        "--batch-size 64 --learning-rate 3e-4 --model resnet18 --no-augment --deterministic "
        "--sizes 8 16 32 --kernel 5 5 --width 16 --small-input --limit 100".split(),
    )
    assert config.batch_size == 64 and isinstance(config.batch_size, int)
    assert config.learning_rate == pytest.approx(3e-4) and isinstance(config.learning_rate, float)
    assert config.model == "resnet18"
    assert config.augment is False and config.deterministic is True
    assert config.sizes == (8, 16, 32) and config.kernel == (5, 5)
    assert config.width == 16 and config.small_input is True and config.limit == 100


def test_base_config_supplies_values_not_overridden():
    base = ToyConfig(epochs=3, width=16)
    config = parse_config(ToyConfig, ["--width", "none", "--augment"], base=base)
    assert config.epochs == 3 and config.width is None and config.augment is True


def test_unknown_flag_lists_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        parse_config(ToyConfig, ["--batch-sise", "64"])
    message = str(err.value)
    assert "--batch-sise" in message
    for flag in ("--batch-size", "--epochs", "--model", "--small-input"):
        assert flag in message
    assert valid_flags(ToyConfig)[:2] == ["--epochs", "--batch-size"]


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--epochs", "two"], "--epochs expects int, got 'two'"),
        (["--dropout", "high"], "--dropout expects float"),
        (["--kernel", "3"], "expected 2 arguments"),
        (["--augment", "false"], "booleans take none"),
        (["--epochs", "0"], "epochs must be a positive integer, got 0"),
        (["--limit", "-5"], "limit must be a positive integer"),
        (["--learning-rate", "-1"], "learning_rate must be > 0"),
        (["--patience", "-1"], "patience must be >= 0"),
        (["--verbose", "3"], r"verbose must be one of \[0, 1, 2\]"),
        (["--strategy", "horovod"], r"strategy must be one of \['auto', 'default', 'mirrored', .*\], got 'horovod'"),
        (["--batch"], "unknown option"),  # no abbreviations: a typo never picks a field
    ],
)
def test_bad_values_raise_config_error(argv, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(ToyConfig, argv)


def test_json_round_trip_and_print(tmp_path, capsys):
    config = ToyConfig(sizes=(1, 2, 3), width=8, small_input=False)
    path = save_config(config, tmp_path / "run" / "config.json")
    assert json.loads(path.read_text())["sizes"] == [1, 2, 3]
    assert load_config(ToyConfig, path) == config
    print_config(config)
    out = capsys.readouterr().out
    assert out.startswith("ToyConfig:") and re.search(r"\n  sizes +=  ?\(1, 2, 3\)\n", out)


def test_stale_or_unreadable_config_files(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"epochs": 2, "removed_field": 1}))
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['removed_field'\]"):
        load_config(ToyConfig, path)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(ToyConfig, path)


def test_sequence_defaults_must_be_tuples():
    with pytest.raises(TypeError, match="use a tuple"):
        option([1, 2], "a list default would be shared between instances")

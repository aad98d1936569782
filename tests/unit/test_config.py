"""Strict dataclass configs: unknown keys and wrong types are one clear ConfigError."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from focaltag.config import apply_overrides, from_dict, load_yaml, to_dict
from focaltag.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 5e-4
    nesterov: bool = True


@dataclass(frozen=True)
class Cfg:
    name: str = "x"
    epochs: int = 200
    loss: Literal["bce", "focal"] = "bce"
    extra: list[str] = field(default_factory=list)
    out: Path | None = None
    optim: Optim = field(default_factory=Optim)


def test_nested_values_are_parsed_and_typed() -> None:
    cfg = from_dict(Cfg, {"epochs": 3.0, "optim": {"lr": "1e-4"}, "extra": ["a"], "out": "runs/x"})
    assert cfg.epochs == 3 and isinstance(cfg.epochs, int)
    assert cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.out == Path("runs/x")
    assert to_dict(cfg)["optim"] == {"lr": 1e-4, "nesterov": True}


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"epoch": 3}, "unknown key 'epoch' (did you mean 'epochs'?)"),
        ({"optim": {"lrr": 1}}, "config.optim: unknown key 'lrr'"),
        ({"epochs": "many"}, "config.epochs: expected an integer"),
        ({"loss": "mse"}, "config.loss: must be one of 'bce', 'focal'"),
        ({"optim": {"nesterov": "yes"}}, "expected true or false"),
        ({"extra": "a"}, "expected a list"),
    ],
)
def test_bad_values_name_the_key(data: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        from_dict(Cfg, data)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_overrides_parse_yaml_values() -> None:
    out = apply_overrides({"optim": {"lr": 1}}, ["optim.lr=0.01", "epochs=3", "extra=[a, b]", "loss=focal"])
    assert out == {"optim": {"lr": 0.01}, "epochs": 3, "extra": ["a", "b"], "loss": "focal"}
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["novalue"])


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_yaml(lst)

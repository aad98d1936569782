"""Shipped configs by name (`train --config paper`, `experiment run genre`), `config list|show`, and the shipped
tag-set experiments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from focaltag.cli import main
from focaltag.config import (
    CONFIG_ROOT,
    is_config_file_argument,
    resolve_config,
    shipped_config_path,
    shipped_configs,
)
from focaltag.errors import ConfigError
from focaltag.experiments.spec import load_experiment, resolve_experiment
from focaltag.training.config import train_config_from_dict


def test_names_and_files() -> None:
    assert resolve_config("paper", "train") == CONFIG_ROOT / "train" / "paper.yaml"
    assert resolve_config("genre", "experiments") == CONFIG_ROOT / "experiments" / "genre.yaml"
    for arg in ("configs/train/paper.yaml", "./paper", "my.yaml", "my.yml", "sub\\x"):
        assert is_config_file_argument(arg) and resolve_config(arg, "train") == Path(arg)
    assert not is_config_file_argument("paper")
    with pytest.raises(ConfigError, match=r"did you mean 'paper'\?.*shipped: demo, paper"):
        resolve_config("papr", "train")
    with pytest.raises(ConfigError, match="unknown config kind"):
        shipped_config_path("models", "x")
    names = shipped_configs()
    assert names["train"] == ["demo", "paper"]
    assert names["experiments"] == ["genre", "instrument", "paper", "top50tags"]


def test_config_list_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert set(listed) == {"train/demo", "train/paper", "experiments/genre", "experiments/instrument",
                           "experiments/paper", "experiments/top50tags"}
    assert all(listed.values())  # each has a one-line description
    assert main(["config", "show", "train/paper"]) == 0
    assert capsys.readouterr().out == (CONFIG_ROOT / "train" / "paper.yaml").read_text()
    assert main(["config", "show", "genre"]) == 0  # unambiguous without the kind
    assert yaml.safe_load(capsys.readouterr().out)["base"]["data"]["tagset"] == "genre"
    assert main(["config", "show", "paper"]) == 2  # train/paper or experiments/paper?
    assert "KIND/NAME" in capsys.readouterr().err


def test_train_by_name_reads_the_shipped_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no data/mtg-jamendo here: the shipped paper config is read, then the data fails
    assert main(["train", "--config", "paper", "--out", "runs/x", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "data/mtg-jamendo" in err and "focaltag data download --tagset moodtheme" in err


def test_experiment_by_name_points_at_the_download(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "run", "genre", "--out", "exp", "-q"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "focaltag data download --tagset genre --out data/mtg-jamendo" in err


@pytest.mark.parametrize("tagset", ["genre", "instrument", "top50tags"])
def test_tagset_experiments_run_the_loss_grid(tagset: str) -> None:
    spec = load_experiment(shipped_config_path("experiments", tagset))
    res = resolve_experiment(spec)
    losses = {"bce", "focal", "cb_focal", "db_focal"}
    assert set(res.runs) == losses | {f"{loss}_class_aware" for loss in losses}
    for run in res.runs.values():
        cfg = train_config_from_dict(run.config)
        assert cfg.data.tagset == tagset and cfg.data.tag_category is None
        assert str(cfg.data.dataset_dir) == "data/mtg-jamendo"
    assert res.ensembles["ensemble"] == ["bce", "focal", "cb_focal", "db_focal"]
    assert {"table1", "table2", "table3", "table4"} <= set(res.tables)

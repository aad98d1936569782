"""Training config: paper defaults, strict YAML loading, --set overrides, and the Adam -> SGD schedule."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from focaltag.errors import ConfigError
from focaltag.training.config import OptimConfig, TrainConfig, load_train_config, train_config_from_dict
from focaltag.training.schedule import make_optimizer, phase_lr, phase_of_epoch

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers_recipe():
    cfg = TrainConfig()
    o = cfg.optim
    assert (o.batch_size, o.epochs, o.adam_lr, o.adam_weight_decay, o.adam_epochs) == (32, 200, 5e-4, 1e-4, 80)
    assert (o.sgd_lr, o.sgd_momentum, o.sgd_nesterov, o.sgd_weight_decay) == (1e-2, 0.9, True, 1e-4)
    assert (o.lr_decay_every, o.lr_decay_factor) == (30, 10.0)
    assert cfg.validation.n_chunks == 16 and cfg.validation.select_by == "pr_auc"
    assert cfg.sampling.draws_per_tag == 3 and cfg.sampling.epoch_divisor == 4
    assert cfg.mixup.alpha == 1.0 and cfg.model.variant == "paper" and cfg.model.width == 128


@pytest.mark.parametrize("name", ["paper.yaml", "demo.yaml"])
def test_shipped_configs_load(name):
    cfg = load_train_config(REPO / "configs" / "train" / name)
    assert isinstance(cfg, TrainConfig)
    if name == "paper.yaml":
        assert cfg.optim == OptimConfig()  # the file spells out the defaults
        assert cfg.data.split == 0 and cfg.data.tagset == "moodtheme" and cfg.data.tag_category is None


def test_unknown_key_error_names_it_and_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  adam_lrr: 1.0e-4\n")
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert "adam_lrr" in msg and "optim" in msg and str(path) in msg and "adam_lr" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="'trainer'"):
        train_config_from_dict({"trainer": {}})


def test_set_overrides_are_applied_and_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("loss:\n  name: bce\noptim:\n  epochs: 10\n")
    cfg = load_train_config(path, ["optim.adam_lr=1e-4", "loss.name=focal", "optim.epochs=3",
                                   "data.extra_train=[a.tsv, b.tsv]", "loss.hyper={gamma: 1.5}",
                                   "runtime.max_steps_per_epoch=5", "mixup.enabled=true"])
    assert cfg.optim.adam_lr == pytest.approx(1e-4) and isinstance(cfg.optim.adam_lr, float)
    assert cfg.loss.name == "focal" and cfg.loss.hyper == {"gamma": 1.5}
    assert cfg.optim.epochs == 3
    assert cfg.data.extra_train == (Path("a.tsv"), Path("b.tsv"))
    assert cfg.runtime.max_steps_per_epoch == 5 and cfg.mixup.enabled is True
    assert load_train_config(None, ["seed=3"]).seed == 3


@pytest.mark.parametrize("override, needle", [
    ("optim.epochs=abc", "optim.epochs"),
    ("sampling.name=balanced", "class_aware"),
    ("optim.batch_size=0", "optim.batch_size"),
    ("loss.name=mse", "loss.name"),
    ("runtime.device=tpu", "runtime.device"),
    ("mixup.enabled=yes please", "mixup.enabled"),
    ("optim", "key=value"),
])
def test_bad_values_are_one_line_errors(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")) as err:
        load_train_config(None, [override])
    assert "\n" not in str(err.value)


def test_config_is_frozen_and_round_trips():
    cfg = load_train_config(None, ["optim.epochs=7", "data.dataset_dir=/x"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert train_config_from_dict(cfg.to_dict()) == cfg


def test_schedule_phases_follow_the_paper():
    o = OptimConfig()
    epochs = (0, 79, 80, 109, 110, 139, 140, 169, 170, 199)  # 0-based: Adam 80, then SGD phases of 30
    assert [phase_of_epoch(o, e) for e in epochs] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert phase_lr(o, 0) == 5e-4
    assert [phase_lr(o, p) for p in (1, 2, 3, 4)] == pytest.approx([1e-2, 1e-3, 1e-4, 1e-5])
    import torch

    params = [torch.nn.Parameter(torch.zeros(2))]
    adam = make_optimizer(params, o, 0)
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["weight_decay"] == 1e-4
    sgd = make_optimizer(params, o, 2)
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9 and sgd.defaults["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(("legacy", "precision"), [
    ({"bf16": True, "cpu_bf16": False}, "auto"),  # 0.2's defaults
    ({"cpu_bf16": True}, "bf16"),  # the 0.2 demo config
    ({"bf16": True, "cpu_bf16": True}, "bf16"),
    ({"bf16": False}, "fp32"),
    ({"bf16": False, "cpu_bf16": False}, "fp32"),
])
def test_old_precision_booleans_are_still_read(legacy, precision, caplog):
    from focaltag.config import to_dict

    with caplog.at_level("WARNING"):
        cfg = train_config_from_dict({"runtime": legacy})
    assert cfg.runtime.precision == precision
    assert f"write runtime.precision: {precision}" in caplog.text  # the deprecation note names the new spelling
    saved = to_dict(cfg)["runtime"]
    assert saved["precision"] == precision and "bf16" not in saved and "cpu_bf16" not in saved
    assert train_config_from_dict({"runtime": saved}).runtime == cfg.runtime  # the new spelling round-trips


def test_precision_is_one_of_the_shared_choices():
    from focaltag.errors import ConfigError
    from focaltag.precision import PRECISIONS

    for p in PRECISIONS:
        assert train_config_from_dict({"runtime": {"precision": p}}).runtime.precision == p
    with pytest.raises(ConfigError, match="runtime.precision"):
        train_config_from_dict({"runtime": {"precision": "fp16"}})
    assert load_train_config(REPO / "configs" / "train" / "demo.yaml").runtime.precision == "bf16"
    assert TrainConfig().runtime.precision == "auto"

"""The paper's recipe wiring, checked against expectations computed outside the loop: the best weights are
reloaded at every Adam -> SGD and decay step, the focal / CB-focal output bias is -log((1 - pi) / pi) after
``init_from``, and a resumed run follows the hand-computed schedule (steps, phases, learning rates)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import focaltag.training.loop as loop
from focaltag.training.checkpoint import load_checkpoint

ADAM_LR, SGD_LR, FACTOR = 1e-3, 1e-2, 10.0


def tiny(data_dir: Path, cache: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """Width-4 won2020 net, one step of 8 per epoch, one validation chunk per track."""
    cfg: dict[str, Any] = {
        "data": {"dataset_dir": str(data_dir), "cache_dir": str(cache), "auto_prepare": True,
                 "prepare_workers": 1},
        "model": {"width": 4, "variant": "won2020"},
        "optim": {"batch_size": 8, "epochs": 3, "adam_epochs": 1, "adam_lr": ADAM_LR, "sgd_lr": SGD_LR,
                  "lr_decay_every": 1, "lr_decay_factor": FACTOR},
        "validation": {"n_chunks": 1, "tracks_per_batch": 9},
        "runtime": {"device": "cpu", "num_workers": 0, "max_steps_per_epoch": 1, "log_every_steps": 1},
        "seed": 0,
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    return cfg


def expected_lr(epoch: int, adam_epochs: int = 1) -> float:
    """The paper's schedule by hand (0-based epoch, decay every epoch)."""
    return ADAM_LR if epoch < adam_epochs else SGD_LR / FACTOR ** (epoch - adam_epochs)


class _SetupDone(Exception):
    """Raised once the model is built, to read its initial weights without training."""


@pytest.fixture(scope="module")
def cache(synth_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic dataset's cache, prepared once by a run stopped right after its setup."""
    root = tmp_path_factory.mktemp("wiring")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loop.ddp, "wrap_ddp", _raise_setup_done)
        with pytest.raises(_SetupDone):
            loop.train(tiny(synth_dataset, root / "cache"), root / "prepare-run")
    return root / "cache"


def _raise_setup_done(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
    raise _SetupDone


def _states_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _scripted_scores(values: list[float]) -> Any:
    """``macro_scores`` replaced by a script: epoch 1 is the best, every later epoch worse, so each phase
    change (from epoch 3 on) must go back to epoch 1's weights, which differ from the current ones."""
    it = iter(values)

    def fake(y_true: Any, y_score: Any) -> dict[str, float]:
        return {"pr_auc": next(it), "roc_auc": 0.5, "tags_scored": 56}

    return fake


def _record_phase_changes(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> list[dict[str, Any]]:
    real = loop.change_phase
    calls: list[dict[str, Any]] = []

    def spy(model: torch.nn.Module, optimizer: Any, optim: Any, old: int, new: int, best_state: Any,
            **kwargs: Any) -> Any:
        before = {k: v.detach().clone() for k, v in model.state_dict().items()}
        out = real(model, optimizer, optim, old, new, best_state, **kwargs)
        on_disk = load_checkpoint(run_dir / "best.pt")  # written when that epoch was best, not from memory
        calls.append({"old": old, "new": new, "lr": out.param_groups[0]["lr"], "type": type(out).__name__,
                      "best_epoch": on_disk["epoch"],
                      "reloaded": _states_equal(model.state_dict(), on_disk["state_dict"]),
                      "differed_before": not _states_equal(before, on_disk["state_dict"])})
        return out

    monkeypatch.setattr(loop, "change_phase", spy)
    return calls


@pytest.mark.parametrize("reload_best", [True, False])
def test_best_weights_are_reloaded_at_every_phase_change(synth_dataset, cache, tmp_path, monkeypatch,
                                                         reload_best: bool) -> None:
    run = tmp_path / "run"
    monkeypatch.setattr(loop, "macro_scores", _scripted_scores([0.5, 0.4, 0.3, 0.2, 0.1]))
    calls = _record_phase_changes(monkeypatch, run)
    cfg = tiny(synth_dataset, cache, optim={"reload_best": reload_best, "epochs": 5, "adam_epochs": 2})
    summary = loop.train(cfg, run)
    assert summary["best_epoch"] == 1 and summary["steps"] == 5
    # Adam for epochs 1-2, SGD from epoch 3, a decay before epochs 4 and 5
    assert [(c["old"], c["new"]) for c in calls] == [(0, 1), (1, 2), (2, 3)]
    assert [c["type"] for c in calls] == ["SGD"] * 3
    assert [c["lr"] for c in calls] == pytest.approx([expected_lr(e, adam_epochs=2) for e in (2, 3, 4)])
    assert all(c["best_epoch"] == 1 and c["differed_before"] for c in calls)
    # with the recipe's reload the weights are epoch 1's after every change; without it they are not
    assert [c["reloaded"] for c in calls] == [reload_best] * 3


@pytest.mark.parametrize("loss", ["focal", "cb_focal"])
def test_output_bias_is_the_prior_bias_after_init_from(synth_dataset, cache, tmp_path, monkeypatch,
                                                       loss: str) -> None:
    from focaltag.models import create_model, save_model

    # a "pretrained" checkpoint of the same architecture whose head bias is 0.7 everywhere
    donor = create_model("short_chunk_resnet", n_tags=56, width=4, variant="won2020")
    with torch.no_grad():
        donor.set_output_bias(torch.full((56,), 0.7))
    bias_keys = [k for k, v in donor.state_dict().items() if v.shape == (56,) and torch.all(v == 0.7)]
    assert len(bias_keys) == 1
    save_model(donor, tmp_path / "donor.pt")
    seen: dict[str, torch.Tensor] = {}

    def capture(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        seen.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        raise _SetupDone

    monkeypatch.setattr(loop.ddp, "wrap_ddp", capture)
    with pytest.raises(_SetupDone):
        loop.train(tiny(synth_dataset, cache, loss={"name": loss},
                        model={"init_from": str(tmp_path / "donor.pt")}), tmp_path / "run")
    prior_bias = -math.log((1 - 0.01) / 0.01)  # Lin et al., pi = 0.01
    torch.testing.assert_close(seen[bias_keys[0]], torch.full((56,), prior_bias), rtol=0, atol=1e-6)
    # the rest of the donor was loaded
    donor_sd = donor.state_dict()
    loaded = [k for k in donor_sd if k != bias_keys[0] and donor_sd[k].is_floating_point()]
    assert loaded and all(torch.equal(seen[k], donor_sd[k]) for k in loaded)


def test_resume_follows_the_hand_computed_schedule(synth_dataset, cache, tmp_path) -> None:
    """3 epochs x 2 steps, last.pt after every step; a crash in step 4 (epoch 2, SGD) loses that step only."""
    cfg = tiny(synth_dataset, cache, optim={"epochs": 3}, loss={"name": "focal"},
               runtime={"max_steps_per_epoch": 2, "checkpoint_every_steps": 1})
    run = tmp_path / "run"
    first: list[int] = []

    def crash(step: int, value: float) -> None:
        first.append(step)
        if step == 4:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        loop.train(cfg, run, on_step=crash)
    assert first == [1, 2, 3, 4]
    assert load_checkpoint(run / "last.pt")["step"] == 3
    resumed: list[int] = []
    summary = loop.train(cfg, run, resume=True, on_step=lambda step, value: resumed.append(step))
    assert resumed == [4, 5, 6]  # exactly the steps that were lost or not yet done
    assert summary["steps"] == 6 and summary["epochs_completed"] == 3
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["epoch"], r["step"], r["phase"]) for r in rows] == [(1, 2, 0), (2, 4, 1), (3, 6, 2)]
    assert [r["lr"] for r in rows] == pytest.approx([expected_lr(e) for e in range(3)])
    last = load_checkpoint(run / "last.pt")
    opt = last["training"]["optimizer"]
    group = opt["param_groups"][0]
    assert group["lr"] == pytest.approx(SGD_LR / FACTOR) and group["nesterov"] and group["momentum"] > 0
    # SGD state (momentum buffers), none of Adam's moments: the switch happened and survived the resume
    assert opt["state"] and all("momentum_buffer" in s and "exp_avg" not in s for s in opt["state"].values())
    assert last["training"]["run"]["phase"] == 2 and last["epoch"] == 3

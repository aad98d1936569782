"""Experiment-file validation: every mistake is one ConfigError naming the key, run or system."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from focaltag.errors import ConfigError
from focaltag.experiments.spec import (
    load_experiment,
    parse_experiment,
    parse_splits,
    resolve_experiment,
)

REPO = Path(__file__).resolve().parents[2]


def _spec(**extra):
    data = {
        "name": "t",
        "base": {"epochs": 3, "model": {"width": 16}},
        "runs": {"bce": {"loss": "bce"}, "focal": {"loss": "focal", "label": "Focal Loss"},
                 "bce_ca": {"loss": "bce", "sampling": "class_aware"}},
        "ensembles": {"ens": ["bce", "focal"]},
        "tables": {"t1": {"kind": "metrics", "systems": ["bce", "focal", "ens"]},
                   "t4": {"kind": "ranking", "systems": ["bce", "focal", "ens", "bce_ca"]}},
        "presets": {"demo": {"runs": ["bce", "bce_ca"], "set": {"epochs": 1, "model.width": 4},
                             "synth": {"n_tracks": 60}, "evaluation": {"bootstrap": 10}}},
    }
    data.update(extra)
    return data


def test_valid_spec_parses_and_resolves():
    spec = parse_experiment(_spec())
    assert list(spec.runs) == ["bce", "focal", "bce_ca"]
    res = resolve_experiment(spec)
    assert res.runs["focal"].config == {"epochs": 3, "model": {"width": 16}, "loss": {"name": "focal"}}
    assert res.runs["bce_ca"].config["sampling"] == {"name": "class_aware"}
    assert res.label("focal") == "Focal Loss" and res.label("ens") == "ens"
    assert res.ensembles == {"ens": ["bce", "focal"]}
    assert res.evaluation.bootstrap == 1000 and res.splits == [0]


def test_preset_overrides_base_and_trims_grid():
    res = resolve_experiment(parse_experiment(_spec()), preset="demo")
    assert list(res.runs) == ["bce", "bce_ca"]
    assert res.runs["bce"].config["epochs"] == 1 and res.runs["bce"].config["model"] == {"width": 4}
    assert res.ensembles == {}  # focal is not in the preset, so the ensemble cannot be formed
    assert "t1" not in res.tables  # a comparison table needs all its systems
    assert res.tables["t4"].systems == ["bce", "bce_ca"]  # a ranking ranks what the preset keeps
    assert res.evaluation.bootstrap == 10 and res.synth is not None and res.synth.n_tracks == 60


def test_run_set_wins_over_shortcut_and_fingerprint_tracks_config():
    data = _spec()
    data["runs"]["bce"] = {"loss": "bce", "set": {"loss.name": "asl", "optim.lr": 0.001}}
    res = resolve_experiment(parse_experiment(data))
    assert res.runs["bce"].config["loss"] == {"name": "asl"}
    assert res.runs["bce"].config["optim"] == {"lr": 0.001}
    assert res.runs["bce"].fingerprint() != res.runs["bce_ca"].fingerprint()


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"rnus": {}}, "unknown key 'rnus'"),
        ({"runs": {"bce": {"los": "bce"}}}, "runs.bce: unknown key 'los'"),
        ({"runs": {"bce": {"sampling": "oversample"}}}, "runs.bce.sampling: must be one of"),
        ({"runs": {"bce": {"variant": "big"}}}, "runs.bce.variant"),
        ({"runs": {}}, "needs at least one named run"),
        ({"runs": {"bad name": {}}}, "'bad name'"),
        ({"ensembles": {"ens": ["bce", "nope"]}}, "ensembles.ens: member 'nope' is not a run"),
        ({"ensembles": {"ens": ["bce"]}}, "at least two run names"),
        ({"ensembles": {"bce": ["bce", "focal"]}}, "ensembles.bce: the name is already a run"),
        ({"tables": {"t": {"systems": ["ghost"]}}}, "tables.t.systems: 'ghost'"),
        ({"tables": {"t": {"kind": "pie", "systems": ["bce"]}}}, "tables.t.kind: must be one of"),
        ({"tables": {"t": {"systems": []}}}, "tables.t.systems"),
        ({"presets": {"demo": {"runs": ["ghost"]}}}, "presets.demo.runs: 'ghost'"),
        ({"presets": {"demo": {"synth": {"tracks": 5}}}}, "presets.demo.synth: unknown key 'tracks'"),
        ({"presets": {"demo": {"evaluation": {"bootstrp": 5}}}}, "unknown key 'bootstrp'"),
        ({"evaluation": {"bootstrap": -1}}, "bootstrap: expected >= 0"),
        ({"evaluation": {"group_thresholds": [100, 200]}}, "group_thresholds"),
        ({"evaluation": {"test_chunks": 0}}, "test_chunks"),
        ({"splits": [-1]}, "experiment.splits"),
        ({"base": 3}, "experiment.base"),
    ],
)
def test_invalid_specs_name_the_problem(patch, message):
    data = _spec()
    if "runs" in patch and patch["runs"] and "bce" in patch["runs"]:
        data["runs"] = {**data["runs"], **patch["runs"]}
        patch = {k: v for k, v in patch.items() if k != "runs"}
    data.update(patch)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_experiment(data)


def test_unknown_preset_and_only_are_config_errors():
    spec = parse_experiment(_spec())
    with pytest.raises(ConfigError, match="--preset 'huge'.*presets: demo"):
        resolve_experiment(spec, preset="huge")
    with pytest.raises(ConfigError, match="--only 'focal'.*with preset demo"):
        resolve_experiment(spec, preset="demo", only=["focal"])


def test_base_path_is_relative_to_experiment_file(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "base.yaml").write_text("epochs: 7\n")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "e.yaml").write_text(yaml.safe_dump({"base": "../train/base.yaml", "runs": {"a": {"loss": "bce"}}}))
    res = resolve_experiment(load_experiment(exp / "e.yaml"))
    assert res.runs["a"].config == {"epochs": 7, "loss": {"name": "bce"}}
    (exp / "f.yaml").write_text(yaml.safe_dump({"base": "missing.yaml", "runs": {"a": {}}}))
    with pytest.raises(ConfigError, match="missing.yaml not found"):
        resolve_experiment(load_experiment(exp / "f.yaml"))


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("runs: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_experiment(bad)


def test_parse_splits():
    assert parse_splits("0,1, 2") == [0, 1, 2]
    for bad in ("a", "0,0", "", "1,-2"):
        with pytest.raises(ConfigError, match="--splits"):
            parse_splits(bad)


def test_shipped_paper_experiment_is_valid():
    path = REPO / "configs" / "experiments" / "paper.yaml"
    if not path.exists():
        pytest.skip("configs/experiments/paper.yaml not written yet")
    spec = load_experiment(path)
    assert {"bce", "focal", "cb_focal", "db_focal"} <= set(spec.runs)
    assert "demo" in spec.presets
    kinds = {t.kind for t in spec.tables.values()}
    assert kinds == {"metrics", "groups", "ranking"}
    res = resolve_experiment(spec, preset="demo")
    assert res.synth is not None and res.ensembles


def test_command_line_overrides_sit_between_preset_and_run():
    spec = parse_experiment(_spec())
    res = resolve_experiment(spec, preset="demo", overrides=["optim.epochs=9", "model.width=2", "loss.name=asl"])
    cfg = res.runs["bce"].config
    assert cfg["optim"] == {"epochs": 9} and cfg["model"] == {"width": 2}  # --set beats the preset
    assert cfg["loss"] == {"name": "bce"}  # the run's own loss beats --set
    with pytest.raises(ConfigError, match="--set expects key=value"):
        resolve_experiment(spec, overrides=["nonsense"])


def test_runs_finished_with_the_old_precision_spelling_keep_their_fingerprint() -> None:
    from focaltag.experiments.spec import ResolvedRun

    old = ResolvedRun("bce", "BCE", {"loss": {"name": "bce"}, "runtime": {"device": "cpu", "cpu_bf16": True}})
    new = ResolvedRun("bce", "BCE", {"loss": {"name": "bce"}, "runtime": {"device": "cpu", "precision": "bf16"}})
    assert new.fingerprint() != old.fingerprint()
    assert new.legacy_fingerprint() == old.fingerprint()  # a DONE marker of 0.2 still counts
    assert ResolvedRun("x", "x", {"runtime": {"precision": "fp32"}}).legacy_fingerprint() is None

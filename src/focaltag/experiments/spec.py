"""The experiment file: named training runs over one base config, ensembles, tables, presets and splits.

An experiment YAML looks like::

    name: paper
    base: ../train/paper.yaml          # a training config file (relative to this file) or an inline mapping
    runs:
      bce:   {loss: bce}
      focal: {loss: focal, label: Focal Loss}
      bce_ca: {loss: bce, sampling: class_aware}
    ensembles:
      ensemble: [bce, focal]
    tables:
      table1: {kind: metrics, title: "Table I", systems: [bce, focal, ensemble]}
      table2: {kind: groups, systems: [bce, focal, ensemble]}
      table4: {kind: ranking, systems: [bce, focal, ensemble, bce_ca]}
    presets:
      demo: {synth: {n_tracks: 160}, set: {epochs: 2}, evaluation: {bootstrap: 100}}

Every mapping is checked strictly: an unknown key, a run name used twice, an ensemble member or table
system that does not exist is a ConfigError naming it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from focaltag.config import apply_overrides, check_seed, from_dict, load_yaml, set_dotted, to_dict
from focaltag.data.groups import DEFAULT_GROUP_THRESHOLDS
from focaltag.errors import ConfigError

__all__ = [
    "RunSpec",
    "TableSpec",
    "EvaluationSpec",
    "SynthSpec",
    "PresetSpec",
    "ExperimentSpec",
    "ResolvedRun",
    "ResolvedExperiment",
    "load_experiment",
    "parse_experiment",
    "resolve_experiment",
    "parse_splits",
    "RUN_SHORTCUTS",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# run shortcut field -> dotted key of the training config it sets (see focaltag.training.config.TrainConfig)
RUN_SHORTCUTS: dict[str, str] = {
    "loss": "loss.name",
    "sampling": "sampling.name",
    "mixup": "mixup.enabled",
    "mixup_alpha": "mixup.alpha",
    "variant": "model.variant",
    "init_from": "model.init_from",
    "extra_train": "data.extra_train",
    "epochs": "optim.epochs",
    "seed": "seed",
}


@dataclass
class RunSpec:
    """One training run: overrides of the base training config (shortcuts first, then ``set``)."""

    label: str = ""  # name shown in tables (default: the run name)
    loss: str | None = None  # bce | focal | cb_focal | db_focal | asl
    sampling: Literal["standard", "class_aware"] | None = None
    mixup: bool | None = None  # waveform mixup on / off
    mixup_alpha: float | None = None  # lambda ~ Beta(alpha, alpha)
    variant: Literal["paper", "won2020"] | None = None  # 4.6 s (paper) or 3.69 s (won2020) receptive field
    init_from: str | None = None  # pretrained checkpoint whose matching weights start the run
    extra_train: list[str] | None = None  # extra training lists (e.g. the Music4All list)
    epochs: int | None = None
    seed: int | None = None
    set: dict[str, Any] = field(default_factory=dict)  # any other training-config key, dotted: value

    def __post_init__(self) -> None:
        if self.seed is not None:
            check_seed(self.seed, "seed")


@dataclass
class TableSpec:
    """One table of the report: ``metrics`` (PR/ROC-AUC + CI + paired test), ``groups`` (head/middle/tail
    PR-AUC) or ``ranking`` (systems sorted by PR-AUC)."""

    kind: Literal["metrics", "groups", "ranking"] = "metrics"
    title: str = ""
    caption: str = ""
    systems: list[str] = field(default_factory=list)
    baseline: str | None = None  # system the paired tests compare against (default: evaluation.baseline)


@dataclass
class EvaluationSpec:
    """How predictions are scored."""

    subset: Literal["test", "validation"] = "test"  # the split the tables report
    bootstrap: int = 1000  # bootstrap resamples for the 95 % intervals and the paired tests (0 = none)
    seed: int = 0
    baseline: str = "bce"  # the run every system is tested against (paired bootstrap)
    # head: train count > a; tail: <= b (default: the paper's, focaltag.data.groups); "auto" keeps the paper's
    # head/tail shares for datasets far smaller than MTG-Jamendo, such as the synthetic demo
    group_thresholds: list[int] | Literal["auto"] = field(default_factory=lambda: list(DEFAULT_GROUP_THRESHOLDS))
    val_chunks: int = 16
    test_chunks: int = 32
    batch_size: int = 32  # chunks per inference forward pass

    def __post_init__(self) -> None:
        check_seed(self.seed, "evaluation.seed")


@dataclass
class SynthSpec:
    """Parameters of :func:`focaltag.data.synth.synthesize_dataset` for a preset's synthetic dataset."""

    n_tracks: int = 200
    seed: int = 0
    min_duration: float = 8.0
    max_duration: float = 14.0

    def __post_init__(self) -> None:
        check_seed(self.seed, "synth.seed")


@dataclass
class PresetSpec:
    """A named scaled-down (or scaled-up) version of the grid, chosen with ``--preset``."""

    description: str = ""
    set: dict[str, Any] = field(default_factory=dict)  # base training-config overrides, dotted keys
    runs: list[str] | None = None  # keep only these runs (default: all); ensembles/tables are trimmed to them
    synth: SynthSpec | None = None  # create a synthetic dataset under OUT/data (if absent) and train on it
    evaluation: dict[str, Any] = field(default_factory=dict)  # EvaluationSpec overrides (e.g. bootstrap)


@dataclass
class ExperimentSpec:
    """A whole experiment file (see the module docstring)."""

    name: str = "experiment"
    description: str = ""
    base: Any = None  # training config: a YAML path (relative to the experiment file) or an inline mapping
    runs: dict[str, Any] = field(default_factory=dict)
    ensembles: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    evaluation: EvaluationSpec = field(default_factory=EvaluationSpec)
    presets: dict[str, Any] = field(default_factory=dict)
    splits: list[int] = field(default_factory=lambda: [0])
    source: str | None = None  # the file it was read from (set by load_experiment)


@dataclass
class ResolvedRun:
    """A run with its final training-config mapping (base + preset + run overrides)."""

    name: str
    label: str
    config: dict[str, Any]

    def fingerprint(self) -> str:
        """Short hash of the training config: a finished run is only reused when its config is unchanged."""
        return _hash(self.config)

    def legacy_fingerprint(self) -> str | None:
        """The fingerprint the same run had when 0.2's experiment files spelled ``runtime.precision: bf16`` as
        ``runtime.cpu_bf16: true``, so runs finished then are still recognised; None when it cannot differ."""
        runtime = self.config.get("runtime")
        if not isinstance(runtime, dict) or runtime.get("precision") != "bf16":
            return None
        old = {k: v for k, v in runtime.items() if k != "precision"}
        old["cpu_bf16"] = True
        return _hash({**self.config, "runtime": old})


def _hash(config: dict[str, Any]) -> str:
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class ResolvedExperiment:
    """An experiment with a preset applied: the runs to train, ensembles and tables to report."""

    name: str
    runs: dict[str, ResolvedRun]
    ensembles: dict[str, list[str]]
    tables: dict[str, TableSpec]
    evaluation: EvaluationSpec
    splits: list[int]
    synth: SynthSpec | None = None
    preset: str | None = None

    def label(self, system: str) -> str:
        run = self.runs.get(system)
        return run.label if run is not None else system


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}: name {name!r} must start with a letter or digit and use only letters, "
                          "digits, '_', '.', '-' (it becomes a folder name)")
    return name


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def parse_experiment(data: dict[str, Any], *, source: str | Path | None = None) -> ExperimentSpec:
    """Validate an experiment mapping (e.g. from YAML) into an ExperimentSpec; errors name the bad key."""
    spec = from_dict(ExperimentSpec, data, where="experiment")
    if source is not None:
        spec.source = str(source)
    if spec.base is not None and not isinstance(spec.base, (str, dict)):
        raise ConfigError(f"experiment.base: expected a training-config path or mapping, got {spec.base!r}")
    runs = _mapping(spec.runs, "experiment.runs")
    if not runs:
        raise ConfigError("experiment.runs: needs at least one named run, e.g. runs: {bce: {loss: bce}}")
    spec.runs = {_check_name(k, "experiment.runs"): from_dict(RunSpec, v or {}, where=f"runs.{k}")
                 for k, v in runs.items()}
    spec.ensembles = {}
    for name, members in _mapping(data.get("ensembles"), "experiment.ensembles").items():
        _check_name(name, "experiment.ensembles")
        if name in spec.runs:
            raise ConfigError(f"ensembles.{name}: the name is already a run; give the ensemble another name")
        if not isinstance(members, list) or len(members) < 2:
            raise ConfigError(f"ensembles.{name}: expected a list of at least two run names, got {members!r}")
        for m in members:
            if m not in spec.runs:
                raise ConfigError(f"ensembles.{name}: member {m!r} is not a run (runs: {', '.join(spec.runs)})")
        spec.ensembles[name] = list(members)
    systems = set(spec.runs) | set(spec.ensembles)
    spec.tables = {}
    for name, table in _mapping(data.get("tables"), "experiment.tables").items():
        _check_name(name, "experiment.tables")
        t = from_dict(TableSpec, table, where=f"tables.{name}")
        if not t.systems:
            raise ConfigError(f"tables.{name}.systems: list the runs/ensembles the table shows")
        for s in t.systems:
            if s not in systems:
                raise ConfigError(f"tables.{name}.systems: {s!r} is neither a run nor an ensemble")
        if t.baseline is not None and t.baseline not in systems:
            raise ConfigError(f"tables.{name}.baseline: {t.baseline!r} is neither a run nor an ensemble")
        spec.tables[name] = t
    spec.presets = {}
    for name, preset in _mapping(data.get("presets"), "experiment.presets").items():
        _check_name(name, "experiment.presets")
        p = from_dict(PresetSpec, preset or {}, where=f"presets.{name}")
        for r in p.runs or []:
            if r not in spec.runs:
                raise ConfigError(f"presets.{name}.runs: {r!r} is not a run (runs: {', '.join(spec.runs)})")
        _merge_evaluation(spec.evaluation, p.evaluation, where=f"presets.{name}.evaluation")
        spec.presets[name] = p
    _check_evaluation(spec.evaluation, "experiment.evaluation")
    if not spec.splits or any(s < 0 for s in spec.splits):
        raise ConfigError(f"experiment.splits: expected a list of split numbers >= 0, got {spec.splits!r}")
    return spec


def _check_evaluation(ev: EvaluationSpec, where: str) -> None:
    if ev.bootstrap < 0:
        raise ConfigError(f"{where}.bootstrap: expected >= 0 resamples, got {ev.bootstrap}")
    if ev.val_chunks < 1 or ev.test_chunks < 1 or ev.batch_size < 1:
        raise ConfigError(f"{where}: val_chunks, test_chunks and batch_size must be >= 1")
    gt = ev.group_thresholds
    if gt != "auto" and (len(gt) != 2 or not gt[0] > gt[1] >= 0):
        raise ConfigError(f"{where}.group_thresholds: expected [head_above, tail_at_most] with head > tail >= 0, "
                          f"or 'auto', got {gt!r}")


def _merge_evaluation(ev: EvaluationSpec, overrides: dict[str, Any], *, where: str) -> EvaluationSpec:
    merged = from_dict(EvaluationSpec, {**to_dict(ev), **overrides}, where=where)
    _check_evaluation(merged, where)
    return merged


def load_experiment(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment YAML file."""
    path = Path(path)
    return parse_experiment(load_yaml(path), source=path.resolve())


def _base_mapping(spec: ExperimentSpec) -> dict[str, Any]:
    if spec.base is None:
        return {}
    if isinstance(spec.base, dict):
        return copy.deepcopy(spec.base)
    path = Path(spec.base).expanduser()
    if not path.is_absolute() and spec.source:
        path = Path(spec.source).parent / path
    if not path.is_file():
        raise ConfigError(f"experiment.base: training config {path} not found; give a path relative to the "
                          "experiment file or an inline mapping")
    return load_yaml(path)


def _set_dotted(mapping: dict[str, Any], key: str, value: Any, where: str) -> None:
    set_dotted(mapping, key, value, where=where)


def run_config(base: dict[str, Any], preset_set: dict[str, Any], run: RunSpec, *, name: str,
               overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The training-config mapping of one run: base, preset ``set``, ``--set`` overrides, run shortcuts, run
    ``set`` (later wins). A ``model.name`` set by a later layer drops the base's arguments of another
    architecture (``width`` of a ResNet base for ``model.name: fcn``)."""
    from focaltag.training.config import drop_arguments_of_replaced_model, override_model_name

    names = [preset_set.get("model.name"), override_model_name(overrides), run.set.get("model.name")]
    new_name = next((str(n) for n in reversed(names) if n is not None), None)
    cfg = drop_arguments_of_replaced_model(copy.deepcopy(base), new_name)
    for key, value in preset_set.items():
        _set_dotted(cfg, key, value, f"preset set {key}")
    cfg = apply_overrides(cfg, overrides)
    for attr, key in RUN_SHORTCUTS.items():
        value = getattr(run, attr)
        if value is not None:
            _set_dotted(cfg, key, value, f"runs.{name}.{attr}")
    for key, value in run.set.items():
        _set_dotted(cfg, key, value, f"runs.{name}.set.{key}")
    return cfg


def resolve_experiment(spec: ExperimentSpec, *, preset: str | None = None, only: list[str] | None = None,
                       splits: list[int] | None = None, overrides: Sequence[str] = ()) -> ResolvedExperiment:
    """Apply a preset and ``--only`` to the spec: the runs to train with their configs, trimmed ensembles/tables."""
    p: PresetSpec | None = None
    if preset is not None:
        if preset not in spec.presets:
            known = ", ".join(spec.presets) or "none defined"
            raise ConfigError(f"--preset {preset!r}: not defined in the experiment file (presets: {known})")
        p = spec.presets[preset]
    keep = list(spec.runs) if p is None or p.runs is None else [r for r in spec.runs if r in p.runs]
    base = _base_mapping(spec)
    runs = {name: ResolvedRun(name, spec.runs[name].label or name,
                              run_config(base, p.set if p else {}, spec.runs[name], name=name,
                                         overrides=overrides))
            for name in keep}
    if only:
        for name in only:
            if name not in runs:
                raise ConfigError(f"--only {name!r}: not a run of this experiment"
                                  f"{' with preset ' + preset if preset else ''} (runs: {', '.join(runs)})")
    ensembles = {k: v for k, v in spec.ensembles.items() if all(m in runs for m in v)}
    systems = set(runs) | set(ensembles)
    tables = {}
    for name, t in spec.tables.items():
        kept = [s for s in t.systems if s in systems]
        # a comparison table is shown only when the preset keeps all it compares; a ranking ranks what is kept
        if kept and (t.kind == "ranking" or len(kept) == len(t.systems)):
            tables[name] = TableSpec(t.kind, t.title, t.caption, kept, t.baseline if t.baseline in kept else None)
    evaluation = _merge_evaluation(spec.evaluation, p.evaluation if p else {}, where="evaluation")
    return ResolvedExperiment(
        name=spec.name, runs=runs, ensembles=ensembles, tables=tables, evaluation=evaluation,
        splits=list(splits) if splits is not None else list(spec.splits),
        synth=p.synth if p else None, preset=preset,
    )


def parse_splits(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2] for ``--splits``; a bad item is a ConfigError."""
    out = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if not item.isdigit():
            raise ConfigError(f"--splits expects comma-separated split numbers like 0,1,2, got {text!r}")
        out.append(int(item))
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"--splits expects distinct split numbers like 0,1,2, got {text!r}")
    return out

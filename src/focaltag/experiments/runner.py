"""Run an experiment grid: train each run (resuming a killed one), predict validation and test matrices, form
ensembles, evaluate, and write the report; finished runs are never redone.

Layout of ``OUT``::

    OUT/experiment.json                 the resolved experiment (runs with their training configs)
    OUT/data/                           the synthetic dataset of a preset with ``synth`` (created if absent)
    OUT/split-N/runs/NAME/              a training run dir (config.yaml, metrics.jsonl, best.pt, last.pt)
    OUT/split-N/runs/NAME/predictions/{validation,test}.npy
    OUT/split-N/runs/NAME/DONE          training and predictions finished (JSON: fingerprint, seconds)
    OUT/split-N/ground_truth/{validation,test}.npy, tags.txt
    OUT/report.md, OUT/results.json, OUT/figures/*.png
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focaltag._io import atomic_write, write_json, write_text
from focaltag.config import to_dict
from focaltag.errors import ConfigError, FocaltagError
from focaltag.experiments.spec import ExperimentSpec, ResolvedExperiment, ResolvedRun, resolve_experiment
from focaltag.training.loss_registry import LOSS_LABELS

__all__ = ["ExperimentResult", "run_experiment", "run_demo_experiment", "default_label", "scoring_precision",
           "PAPER_EXPERIMENT"]

log = logging.getLogger(__name__)

PAPER_EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "paper.yaml"
SUBSETS = ("validation", "test")

# loss labels from the registry; ``*_loss`` are the published matrices' file names (focal_loss_predictions.npy)
_LABELS = {**LOSS_LABELS, **{f"{n}_loss": label for n, label in LOSS_LABELS.items()}, "ensemble": "Ensemble"}
_SUFFIXES = {"_class_aware": "class-aware", "_ca": "class-aware", "_mixup": "mixup",
             "_won2020": "3.69 s receptive field", "_jamendo": "Jamendo only"}


def default_label(name: str) -> str:
    """Table label of a system name: ``focal`` -> ``Focal Loss``, ``bce_class_aware`` -> ``BCE Loss
    (class-aware)``; unknown names are kept."""
    extras: list[str] = []
    base = name
    changed = True
    while changed:
        changed = False
        for suffix, text in _SUFFIXES.items():
            if base.endswith(suffix) and base[: -len(suffix)]:
                base, changed = base[: -len(suffix)], True
                extras.insert(0, text)
    if base not in _LABELS:
        return name
    return _LABELS[base] + (f" ({', '.join(extras)})" if extras else "")


@dataclass
class ExperimentResult:
    """What ``run_experiment`` did and where the report is."""

    out_dir: Path
    report_path: Path
    report_text: str
    results: dict[str, Any]
    trained: list[str] = field(default_factory=list)  # "split-N/NAME" trained (or resumed) in this call
    skipped: list[str] = field(default_factory=list)  # finished before this call
    failed: list[str] = field(default_factory=list)  # "split-N/NAME: reason"
    seconds: float = 0.0


# ------------------------------------------------------------------ hooks onto training and inference
def _train(config: Any, run_dir: Path, *, resume: bool) -> None:
    """Train one run (``focaltag.training.loop.train``); resume continues from ``run_dir/last.pt``."""
    from focaltag.training.loop import train

    train(config, run_dir, resume=resume)


def _predict(run_dir: Path, tsv: Path, config: Any, *, n_chunks: int, batch_size: int) -> tuple[np.ndarray, list[str]]:
    """Score every track of ``tsv`` with the run's best checkpoint: (n_tracks, n_tags) matrix, tag names."""
    from focaltag.inference import InferenceOptions, Tagger
    from focaltag.inference.predict import predict_split

    _prepare_tracks(config, tsv)
    device = _device(config.runtime.device)
    tagger = Tagger(run_dir / "best.pt", InferenceOptions(n_chunks=n_chunks, batch_size=batch_size, device=device,
                                                          thresholds=None, precision=scoring_precision(device)))
    matrix, _ids = predict_split(None, tsv, _cache_dir(config), n_chunks, batch_size=batch_size,
                                 device=device, tagger=tagger)
    return np.asarray(matrix, dtype=np.float32), sorted(tagger.tag_names)


def scoring_precision(device: str) -> str:
    """The precision an experiment scores its fresh checkpoints in: ``auto`` where that is bf16 (fast, and
    re-checked in float32 on close calls), else float32. Never int8: a checkpoint is scored once, so int8's
    export and calibration would not pay back (the README gives the demo's time with and without them), and its
    larger error would reach the metric tables."""
    from focaltag.precision import runs_bf16_fast

    return "auto" if runs_bf16_fast(device) else "fp32"


def _device(name: str) -> str:
    from focaltag.devices import resolve_device

    return resolve_device(name, option="runtime.device")


def _cache_dir(config: Any) -> Path:
    from focaltag.training.data import cache_dir_of

    return cache_dir_of(config.data)


def _prepare_tracks(config: Any, tsv: Path) -> None:
    """Add the tracks of ``tsv`` (the test split) to the run's waveform cache when they are missing."""
    from focaltag.audio.cache import WaveformCache, prepare_cache
    from focaltag.data.metadata import read_tracks

    tracks = read_tracks(tsv, allow_untagged=True)
    cache_dir = _cache_dir(config)
    try:
        cache = WaveformCache(cache_dir)
        missing = [t for t in tracks if t.track_id not in cache]
    except (FocaltagError, OSError):
        missing = tracks
    if not missing:
        return
    from focaltag.training.data import audio_dir_of

    data = config.data
    audio = audio_dir_of(data)
    if audio is None or not Path(audio).is_dir() or not data.auto_prepare:
        raise ConfigError(f"{len(missing)} tracks of {tsv} are not in the cache {cache_dir}; run `focaltag data "
                          "prepare` for that split, or set data.audio_dir with data.auto_prepare=true")
    log.info("adding %d tracks of %s to the cache %s", len(missing), tsv.name, cache_dir)
    prepare_cache(missing, audio, cache_dir, workers=data.prepare_workers)


# ------------------------------------------------------------------ helpers
def _read_marker(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path, "wb") as fh:
        np.save(fh, array)


def _split_tsvs(config: Any) -> dict[str, Path]:
    from focaltag.training.data import part_files

    data = config.data
    if data.dataset_dir is None:
        raise ConfigError("experiment runs need data.dataset_dir (an MTG-Jamendo-layout folder with "
                          "splits/split-N/, or a folder with tracks.csv); set it in the base training config")
    return part_files(data)


def _check_splits_apply(configs: dict[str, Any], splits: Sequence[int]) -> None:
    """An own ``tracks.csv`` dataset has one split: cross-validation over ``--splits`` would repeat it."""
    if len(splits) < 2:
        return
    from focaltag.data.dataset import is_own_dataset

    for config in configs.values():
        root = config.data.dataset_dir
        if root is not None and is_own_dataset(root):
            raise ConfigError(f"--splits {','.join(map(str, splits))}: {root} is an own dataset (tracks.csv) with "
                              "one split; run it without --splits")


def _train_config(run: ResolvedRun, split: int) -> Any:
    from focaltag.config import apply_overrides
    from focaltag.training.config import train_config_from_dict

    mapping = apply_overrides(run.config, [f"data.split={split}"])
    return train_config_from_dict(mapping, source=f"run {run.name}")


def _prepare_synthetic(res: ResolvedExperiment, out: Path) -> Path | None:
    if res.synth is None:
        return None
    data_dir = out / "data"
    if not (data_dir / "SYNTHETIC_DATASET.txt").is_file():
        from focaltag.data.synth import synthesize_dataset

        s = res.synth
        log.info("creating the synthetic dataset in %s (%d tracks)", data_dir, s.n_tracks)
        synthesize_dataset(data_dir, n_tracks=s.n_tracks, seed=s.seed, min_duration=s.min_duration,
                           max_duration=s.max_duration)
    for run in res.runs.values():
        run.config.setdefault("data", {})["dataset_dir"] = str(data_dir)
    return data_dir


# ------------------------------------------------------------------ one run
def _run_one(run: ResolvedRun, split: int, split_dir: Path, res: ResolvedExperiment) -> str:
    """Train (or resume) and predict one run unless it is DONE; returns "skipped" or "trained"."""
    run_dir = split_dir / "runs" / run.name
    fp = run.fingerprint()
    done = _read_marker(run_dir / "DONE")
    if done is not None:
        if done.get("fingerprint") not in (None, fp, run.legacy_fingerprint()):
            raise ConfigError(f"run {run.name!r} in {run_dir} was finished with a different training config; "
                              "delete that folder to retrain it, or use another --out")
        log.info("split-%d %s: finished earlier, skipped", split, run.name)
        return "skipped"
    config = _train_config(run, split)
    started = time.time()
    resume = (run_dir / "last.pt").is_file()  # a killed run continues; a finished one returns at once
    log.info("split-%d %s: %s training", split, run.name, "resuming" if resume else "starting")
    _train(config, run_dir, resume=resume)
    tsvs = _split_tsvs(config)
    ev = res.evaluation
    for subset, n_chunks in (("validation", ev.val_chunks), ("test", ev.test_chunks)):
        log.info("split-%d %s: predicting %s (%d chunks per track)", split, run.name, subset, n_chunks)
        pred, tags = _predict(run_dir, tsvs[subset], config, n_chunks=n_chunks, batch_size=ev.batch_size)
        _ensure_ground_truth(split_dir, subset, tsvs[subset], tags)
        _save_npy(run_dir / "predictions" / f"{subset}.npy", pred)
    write_json(run_dir / "DONE", {"fingerprint": fp, "seconds": round(time.time() - started, 1),
                                  "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
    return "trained"


def _ensure_ground_truth(split_dir: Path, subset: str, tsv: Path, tags: Sequence[str]) -> None:
    from focaltag.data.metadata import TagVocabulary, read_tracks

    gt_dir = split_dir / "ground_truth"
    tag_file = gt_dir / "tags.txt"
    if tag_file.is_file():
        known = tag_file.read_text(encoding="utf-8").split()
        if known != list(tags):
            raise ConfigError(f"the runs of {split_dir} predict different tag lists; every run of an "
                              "experiment must use the same tags (check data.tagset and data.tag_category)")
    else:
        write_text(tag_file, "\n".join(tags) + "\n")
    path = gt_dir / f"{subset}.npy"
    if not path.is_file():
        vocab = TagVocabulary(tags, sort=False)
        _save_npy(path, vocab.encode(read_tracks(tsv), unknown="ignore"))


# ------------------------------------------------------------------ the grid
def run_experiment(spec: ExperimentSpec, out_dir: str | Path, *, only: Sequence[str] | None = None,
                   preset: str | None = None, splits: Sequence[int] | None = None,
                   bootstrap: int | None = None, overrides: Sequence[str] = (),
                   figures: bool = True) -> ExperimentResult:
    """Train, predict, ensemble, evaluate and report every run of ``spec`` (see the module docstring).

    ``overrides`` (``key=value``) change the base training config of every run (e.g.
    ``data.dataset_dir=/data/mtg-jamendo`` or ``model.init_from=pretrained.pt``); ``bootstrap`` replaces the
    experiment's number of bootstrap resamples; ``figures=False`` skips the PNGs.
    """
    started = time.time()
    res = resolve_experiment(spec, preset=preset, only=list(only) if only else None,
                             splits=list(splits) if splits is not None else None, overrides=overrides)
    if bootstrap is not None:
        res.evaluation.bootstrap = bootstrap
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = _prepare_synthetic(res, out)
    configs = {name: _train_config(run, res.splits[0]) for name, run in res.runs.items()}  # fail fast
    _check_splits_apply(configs, res.splits)
    for split in res.splits:  # every split's files must exist before anything trains
        for name in res.runs:
            _split_tsvs(_train_config(res.runs[name], split))
    write_json(out / "experiment.json", {
        "name": res.name, "preset": res.preset, "splits": res.splits, "evaluation": to_dict(res.evaluation),
        "ensembles": res.ensembles, "tables": {k: to_dict(v) for k, v in res.tables.items()},
        "runs": {n: {"label": r.label, "fingerprint": r.fingerprint(), "config": r.config}
                 for n, r in res.runs.items()},
    })
    result = ExperimentResult(out, out / "report.md", "", {})
    todo = [n for n in res.runs if not only or n in only]
    for split in res.splits:
        split_dir = out / f"split-{split}"
        for name in todo:
            key = f"split-{split}/{name}"
            try:
                status = _run_one(res.runs[name], split, split_dir, res)
            except ConfigError:
                raise
            except FocaltagError as err:
                log.error("%s failed: %s", key, err)
                result.failed.append(f"{key}: {err}")
                continue
            (result.skipped if status == "skipped" else result.trained).append(key)
    synthetic = data_dir is not None or any(
        (Path(c.data.dataset_dir) / "SYNTHETIC_DATASET.txt").is_file() for c in configs.values()
        if c.data.dataset_dir is not None)
    result.results, result.report_text = experiment_report(res, out, configs, synthetic=synthetic,
                                                             figures=figures)
    result.seconds = round(time.time() - started, 1)
    log.info("experiment finished in %.0f s: %d trained, %d skipped, %d failed", result.seconds,
             len(result.trained), len(result.skipped), len(result.failed))
    return result


# ------------------------------------------------------------------ the report
def _label(res: ResolvedExperiment, name: str) -> str:
    run = res.runs.get(name)
    return run.label if run is not None and run.label != name else default_label(name)


def _load_split(split_dir: Path, res: ResolvedExperiment, subset: str) -> tuple[dict, np.ndarray, list[str]] | None:
    tag_file = split_dir / "ground_truth" / "tags.txt"
    gt_file = split_dir / "ground_truth" / f"{subset}.npy"
    if not tag_file.is_file() or not gt_file.is_file():
        return None
    systems = {}
    for name in res.runs:
        run_dir = split_dir / "runs" / name
        if (run_dir / "DONE").is_file() and (run_dir / "predictions" / f"{subset}.npy").is_file():
            systems[name] = np.load(run_dir / "predictions" / f"{subset}.npy")
    if not systems:
        return None
    return systems, np.load(gt_file), tag_file.read_text(encoding="utf-8").split()


def _train_counts(configs: dict[str, Any], split: int, tags: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    from focaltag.evaluation.groups import count_training_tags

    first = next(iter(configs.values()))
    main = _split_tsvs_for(first, split)["train"]
    extras: list[Path] = []
    for c in configs.values():
        extras += [Path(p) for p in c.data.extra_train if Path(p) not in extras]
    base = count_training_tags([main], tags)
    if not extras:
        return base, {f"split-{split} train": base}
    total = base + count_training_tags(extras, tags)
    return total, {f"split-{split} train": base, f"split-{split} train + {len(extras)} extra list(s)": total}


def _split_tsvs_for(config: Any, split: int) -> dict[str, Path]:
    import dataclasses

    from focaltag.training.data import part_files

    if config.data.train_tsv is not None:
        return {"train": Path(config.data.train_tsv)}
    return part_files(dataclasses.replace(config.data, split=split))


def experiment_report(res: ResolvedExperiment, out: Path, configs: dict[str, Any], *, synthetic: bool,
                      figures: bool = True) -> tuple[dict[str, Any], str]:
    """Score what has finished (split 0 with intervals and tests; other splits for mean ± std) and write
    report.md, results.json and figures."""
    from focaltag.experiments.figures import read_metrics_jsonl
    from focaltag.experiments.report import ReportOptions, build_results, summarize_splits, write_report

    ev = res.evaluation
    primary = res.splits[0]
    per_split: dict[int, tuple[dict, dict, np.ndarray, dict]] = {}
    for split in res.splits:
        loaded = _load_split(out / f"split-{split}", res, ev.subset)
        if loaded is None:
            continue
        systems, gt, tags = loaded
        ensembles = {k: v for k, v in res.ensembles.items() if all(m in systems for m in v)}
        tables = {k: t for k, t in res.tables.items() if any(s in systems or s in ensembles for s in t.systems)}
        counts, dists = _train_counts(configs, split, tags)
        notes = [f"Preset: {res.preset}." if res.preset else ""]
        notes += [f"Runs not finished (left out): {', '.join(n for n in res.runs if n not in systems)}."
                  if len(systems) < len(res.runs) else ""]
        opts = ReportOptions(baseline=ev.baseline, bootstrap=ev.bootstrap if split == primary else 0,
                             seed=ev.seed, group_thresholds=ev.group_thresholds, subset=ev.subset,
                             synthetic=synthetic, title=f"{res.name}: experiment report",
                             notes=[n for n in notes if n])
        labels = {n: _label(res, n) for n in [*systems, *ensembles]}
        results, preds = build_results(systems, gt, tag_names=tags, train_counts=counts, ensembles=ensembles,
                                       tables=tables, labels=labels, options=opts)
        per_split[split] = (results, preds, gt, dists)
    if primary not in per_split:
        text = (f"# {res.name}: experiment report\n\nNo run of split {primary} has finished yet; "
                "rerun the same command to continue.\n")
        write_text(out / "report.md", text)
        return {}, text
    results, preds, gt, dists = per_split[primary]
    results["meta"]["split"] = primary
    if len(per_split) > 1:
        results["cv"] = summarize_splits({s: v[0] for s, v in per_split.items()})
    runs_dir = out / f"split-{primary}" / "runs"
    histories = {_label(res, n): read_metrics_jsonl(runs_dir / n / "metrics.jsonl") for n in res.runs}
    text = write_report(results, preds, gt, out, distributions=dists, histories=histories, figures_on=figures)
    return results, text


def run_demo_experiment(out_dir: str | Path, *, quick: bool = False, bootstrap: int | None = None) -> ExperimentResult:
    """The ``demo`` preset of configs/experiments/paper.yaml (``quick``: the ``demo-quick`` preset)."""
    from focaltag.experiments.spec import load_experiment

    if not PAPER_EXPERIMENT.is_file():
        raise ConfigError(f"the shipped experiment file {PAPER_EXPERIMENT} is missing; reinstall focaltag "
                          "from a source checkout")
    return run_experiment(load_experiment(PAPER_EXPERIMENT), out_dir, preset="demo-quick" if quick else "demo",
                          bootstrap=bootstrap)

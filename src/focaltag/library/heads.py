"""Your own tags: train a head on your labelled tracks (``focaltag head train``) and score it (``head eval``).

The steps of :func:`train_head`, each in one place:

1. the labels file is read and checked (:func:`focaltag.data.labels.load_labels`) before anything is written;
2. each track's embedding comes from the base model through the inference API
   (``Tagger(base, InferenceOptions(embeddings=True))``: the chunk mean of the layer before the classifier, 16
   evenly spaced chunks, float32), or from a library run's vector store (``--library tags.jsonl``); extracted
   vectors are cached in the output folder's ``work/`` keyed by path, size, modification time and base model,
   so an interrupted run continues and a second training decodes nothing again;
3. :func:`cross_validate_head`: stratified folds, the head size chosen by out-of-fold macro PR-AUC, out-of-fold
   macro and per-tag PR-AUC / ROC-AUC with the project's bootstrap intervals, for the chosen loss and for BCE
   (standard sampling) on the same folds with a paired comparison, and thresholds chosen on the out-of-fold
   predictions with the official rule (``probability > threshold``);
4. the final head is trained on all tracks and saved with its base as one model (:mod:`focaltag.models.head`).

The head is trained on each track's mean embedding; a tagger applies it to each chunk's embedding and averages
the chunk probabilities, as for every model. ``head eval`` therefore runs the saved model through the tagger,
so its scores are those of the model as it tags.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focaltag._version import __version__
from focaltag.data.labels import LabelSet, check_paths_exist, check_positives, load_labels, read_labels
from focaltag.errors import ConfigError, DataError
from focaltag.training.head import (
    HeadOptions,
    cross_val_predict,
    fit_head,
    multilabel_folds,
    select_head_size,
)

__all__ = ["HeadReport", "cross_validate_head", "per_tag_intervals", "train_head", "evaluate_head",
           "extract_embeddings", "library_embeddings", "BOOTSTRAP", "EMBEDDING_CHUNKS"]

logger = logging.getLogger(__name__)

BOOTSTRAP = 1000
"""Bootstrap resamples of the intervals (as ``focaltag evaluate --bootstrap``)."""
EMBEDDING_CHUNKS = 16
"""Chunks per track whose embeddings are averaged: the evaluation protocol's evenly spaced positions."""
SHOWN = 10
_SAVE_EVERY_S = 30.0


# --------------------------------------------------------------------------------------------- scoring


def per_tag_intervals(y: np.ndarray, scores: np.ndarray, *, n_resamples: int = BOOTSTRAP, seed: int = 0,
                      level: float = 0.95) -> dict[str, list[list[float | None]]]:
    """Per-tag normal intervals of PR-AUC and ROC-AUC (point +- z * bootstrap SE, resampling tracks), on the
    resamples ``focaltag.evaluate`` draws for the same seed; ``[None, None]`` where a tag is undefined."""
    from focaltag.evaluation.bootstrap import (
        bootstrap_tag_scores,
        normal_interval,
        resample_indices,
        resample_weights,
    )
    from focaltag.metrics import per_tag_scores

    ap, auc = per_tag_scores(y, scores)
    weights = resample_weights(resample_indices(len(y), n_resamples, seed=seed), len(y))
    boot_ap, boot_auc = bootstrap_tag_scores(y, scores, weights)
    out: dict[str, list[list[float | None]]] = {"PR-AUC": [], "ROC-AUC": []}
    for name, point, boot in (("PR-AUC", ap, boot_ap), ("ROC-AUC", auc, boot_auc)):
        for j in range(y.shape[1]):
            interval = normal_interval(float(point[j]), boot[:, j], level)
            out[name].append([None if not np.isfinite(v) else float(v) for v in interval])
    return out


def _scored(y: np.ndarray, scores: np.ndarray, tag_names: Sequence[str], thresholds: np.ndarray | None, *,
            n_resamples: int, seed: int) -> dict[str, Any]:
    """``focaltag.evaluate``'s dictionary (macro, micro, per tag, intervals) plus per-tag intervals."""
    from focaltag.evaluation import evaluate

    result = evaluate(y, scores, tag_names=list(tag_names), per_tag=True, bootstrap=n_resamples, seed=seed,
                      thresholds=thresholds)
    intervals = per_tag_intervals(y, scores, n_resamples=n_resamples, seed=seed)
    for j, tag in enumerate(tag_names):
        result["per_tag"][tag]["PR-AUC-ci"] = intervals["PR-AUC"][j]
        result["per_tag"][tag]["ROC-AUC-ci"] = intervals["ROC-AUC"][j]
    return result


@dataclass
class HeadReport:
    """Cross-validation of a head on one embedding matrix; :meth:`to_dict` is the model card's section.

    ``oof`` are the chosen configuration's out-of-fold probabilities, ``baseline_oof`` BCE's (standard
    sampling, same head size, same folds); ``thresholds`` (tag order) were chosen on ``oof`` with the official
    rule; ``metrics`` / ``baseline_metrics`` are ``focaltag.evaluate`` dictionaries (the F-scores there use
    those thresholds on the same predictions, so they are in-sample); ``comparison`` is the paired bootstrap of
    chosen minus BCE.
    """

    tag_names: tuple[str, ...]
    options: HeadOptions
    folds: np.ndarray
    hidden_dim: int
    candidates: dict[int, float]
    oof: np.ndarray
    baseline_oof: np.ndarray
    thresholds: np.ndarray
    metrics: dict[str, Any]
    baseline_metrics: dict[str, Any]
    comparison: dict[str, Any]
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def compared_with_bce(self) -> bool:
        """False when the chosen configuration is BCE with standard sampling itself."""
        return (self.options.loss, self.options.sampling) != ("bce", "standard")

    def to_dict(self) -> dict[str, Any]:
        o = self.options
        return {
            "tracks": int(len(self.oof)),
            "folds": o.folds,
            "seed": o.seed,
            "loss": o.loss,
            "sampling": o.sampling,
            "head": {"hidden_dim": self.hidden_dim, "kind": _head_kind(self.hidden_dim),
                     "candidates": {_head_kind(h): s for h, s in self.candidates.items()}},
            "training": {"steps": o.steps, "batch_size": o.batch_size, "optimizer": "AdamW, cosine decay",
                         "lr": o.lr, "weight_decay": o.weight_decay, "drop_rate": o.drop_rate},
            "metrics": self.metrics,
            "bce": {"loss": "bce", "sampling": "standard", "metrics": self.baseline_metrics},
            "comparison_with_bce": self.comparison,
            "thresholds": {t: float(v) for t, v in zip(self.tag_names, self.thresholds, strict=True)},
            "decision_rule": "probability > threshold (official MediaEval rule), chosen on the out-of-fold "
                             "predictions",
        }


def _head_kind(hidden_dim: int) -> str:
    return "linear" if hidden_dim == 0 else f"hidden {hidden_dim}"


def cross_validate_head(embeddings: object, labels: object, tag_names: Sequence[str],
                        options: HeadOptions | None = None, *, bootstrap: int = BOOTSTRAP) -> HeadReport:
    """Cross-validate a head on ``embeddings`` (n_tracks, D) and ``labels`` (n_tracks, n_tags) 0/1.

    Chooses the head size among ``options.hidden_sizes`` by out-of-fold macro PR-AUC with ``options``' loss and
    sampling, scores it with intervals, cross-validates BCE with standard sampling on the same folds and head
    size, compares the two with the paired bootstrap, and chooses thresholds on the out-of-fold predictions.
    Every number is a function of the inputs and ``options.seed``.
    """
    from focaltag.evaluation import paired_bootstrap
    from focaltag.evaluation.thresholds import mediaeval_thresholds

    opts = options or HeadOptions()
    x = np.asarray(embeddings, dtype=np.float32)
    y = np.asarray(labels).astype(np.int8)
    names = tuple(tag_names)
    if y.ndim != 2 or y.shape[1] != len(names):
        raise DataError(f"labels have shape {y.shape} but {len(names)} tag names were given")
    check_positives(LabelSet(tuple(map(str, range(len(y)))), names, y), opts.folds)
    folds = multilabel_folds(y, opts.folds, seed=opts.seed)
    hidden, results = select_head_size(x, y, folds, opts)
    oof = results[hidden][1]
    same = (opts.loss, opts.sampling) == ("bce", "standard")
    baseline = oof if same else cross_val_predict(x, y, folds, hidden_dim=hidden, options=opts, loss="bce",
                                                  sampling="standard")
    thresholds = mediaeval_thresholds(y, oof, tag_names=list(names))
    metrics = _scored(y, oof, names, thresholds, n_resamples=bootstrap, seed=opts.seed)
    baseline_thresholds = mediaeval_thresholds(y, baseline, tag_names=list(names))
    baseline_metrics = _scored(y, baseline, names, baseline_thresholds, n_resamples=bootstrap, seed=opts.seed)
    comparison = paired_bootstrap(y, oof, baseline, n_resamples=bootstrap, seed=opts.seed, tag_names=list(names))
    return HeadReport(names, opts, folds, hidden, {h: r[0] for h, r in results.items()}, oof, baseline, thresholds,
                      metrics, baseline_metrics, comparison,
                      {t: int(c) for t, c in zip(names, y.sum(axis=0), strict=True)})


# --------------------------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class _Base:
    """The loaded base: its tagger (embeddings), label, members (torch networks) and a cache key."""

    tagger: Any
    label: str
    members: tuple[Any, ...]
    member_labels: tuple[str, ...]
    key: str


def _load_base(spec: str | os.PathLike[str], *, device: str = "cpu", batch_size: int | None = None,
               workers: int | None = None) -> _Base:
    from focaltag.inference import InferenceOptions, Tagger
    from focaltag.models import load_model
    from focaltag.models.head import TagHead

    options = InferenceOptions(n_chunks=EMBEDDING_CHUNKS, adaptive=False, precision="fp32", thresholds=None,
                               top_k=0, embeddings=True, device=device, batch_size=batch_size, workers=workers)
    tagger = Tagger(os.fspath(spec) if isinstance(spec, os.PathLike) else spec, options)
    members, labels, key = [], [], [tagger.model_name]
    for source in tagger.resolved.members:
        if source.path is not None and source.path.suffix.lower() == ".onnx":
            raise ConfigError(f"base {source.path} is an ONNX file; a head's base must be a torch checkpoint, run "
                              "folder, ensemble folder or catalogue name")
        model = source.model if source.path is None else load_model(source.path)
        if isinstance(model, TagHead):
            raise ConfigError(f"base {spec} is itself a head model; train on the base it was built from")
        members.append(model)
        name = tagger.model_name if len(tagger.resolved.members) == 1 else str(source.name)
        labels.append(name)
        if source.path is not None:
            st = os.stat(source.path)
            key.append(f"{os.path.realpath(source.path)}:{st.st_size}:{st.st_mtime_ns}")
    return _Base(tagger, tagger.model_name, tuple(members), tuple(labels), "|".join(key))


def _file_key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(st.st_size), int(st.st_mtime_ns)


class _EmbeddingCache:
    """``work/embeddings-<base>.npz``: path -> (size, mtime_ns, vector); saved atomically every 30 s and at the
    end, so a killed extraction loses at most that much work."""

    def __init__(self, folder: Path, base_key: str, dim: int) -> None:
        digest = hashlib.sha1(base_key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        self.path = folder / f"embeddings-{digest}.npz"
        self.base_key, self.dim = base_key, dim
        self.entries: dict[str, tuple[int, int, np.ndarray]] = {}
        self.dirty, self.saved_at = False, time.monotonic()
        if self.path.is_file():
            self._load()

    def _load(self) -> None:
        try:
            with np.load(self.path, allow_pickle=False) as data:
                if str(data["base_key"]) != self.base_key or data["vectors"].shape[1:] != (self.dim,):
                    return
                for p, size, mtime, vec in zip(data["paths"], data["sizes"], data["mtimes"], data["vectors"],
                                               strict=True):
                    self.entries[str(p)] = (int(size), int(mtime), np.asarray(vec, dtype=np.float32))
        except (OSError, ValueError, KeyError) as err:
            logger.warning("ignoring the damaged embedding cache %s (%s); extracting again", self.path, err)
            self.entries.clear()

    def get(self, path: str) -> np.ndarray | None:
        entry = self.entries.get(path)
        key = _file_key(path)
        return entry[2] if entry is not None and key is not None and key == entry[:2] else None

    def put(self, path: str, vector: np.ndarray) -> None:
        key = _file_key(path)
        if key is not None:
            self.entries[path] = (*key, np.asarray(vector, dtype=np.float32))
            self.dirty = True
        if time.monotonic() - self.saved_at > _SAVE_EVERY_S:
            self.save()

    def save(self) -> None:
        if not self.dirty:
            return
        from focaltag._io import atomic_write

        paths = list(self.entries)
        with atomic_write(self.path, "wb") as fh:
            np.savez(fh, base_key=np.array(self.base_key), paths=np.array(paths, dtype=str),
                     sizes=np.array([self.entries[p][0] for p in paths], dtype=np.int64),
                     mtimes=np.array([self.entries[p][1] for p in paths], dtype=np.int64),
                     vectors=np.array([self.entries[p][2] for p in paths], dtype=np.float32).reshape(-1, self.dim))
        self.dirty, self.saved_at = False, time.monotonic()


def extract_embeddings(base: Any, paths: Sequence[str], work: str | os.PathLike[str] | None = None
                       ) -> tuple[np.ndarray, dict[str, str]]:
    """Embeddings ``(len(paths), D)`` float32 of audio files through the base's tagger, and the files that failed
    (``{path: reason}``; their rows are zero). ``work``: the folder of the resumable cache (None: no cache)."""
    from focaltag._progress import progress
    from focaltag.inference.tagger import TagResult

    loaded: _Base = base if isinstance(base, _Base) else _load_base(base)
    dim = int(loaded.tagger.embedding_size)
    cache = _EmbeddingCache(Path(work), loaded.key, dim) if work is not None else None
    out = np.zeros((len(paths), dim), dtype=np.float32)
    todo: list[int] = []
    for i, p in enumerate(paths):
        hit = cache.get(p) if cache is not None else None
        if hit is None:
            todo.append(i)
        else:
            out[i] = hit
    failures: dict[str, str] = {}
    if todo:
        logger.info("extracting %d embedding(s) with %s (%d cached)", len(todo), loaded.label, len(paths) - len(todo))
        try:
            with progress(total=len(todo), desc="embeddings", unit="file") as bar:
                for i, result in zip(todo, loaded.tagger.tag_many([paths[i] for i in todo]), strict=True):
                    if isinstance(result, TagResult) and result.embedding is not None:
                        out[i] = result.embedding
                        if cache is not None:
                            cache.put(paths[i], out[i])
                    else:
                        failures[paths[i]] = str(getattr(result, "error", "no embedding"))
                    bar.update(1)
        finally:
            if cache is not None:
                cache.save()
    return out, failures


def library_embeddings(library: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], str]:
    """The stored embeddings of a library run (``focaltag tag DIR -o tags.jsonl --embeddings``): ``{absolute
    path: vector}`` (each recorded file located as :meth:`focaltag.Library.locate` does) and the model label."""
    from focaltag.library.api import Library

    lib = Library(library)
    label = lib.embedding_model
    files, matrix = lib.embeddings()
    vectors: dict[str, np.ndarray] = {}
    for file, row in zip(files, matrix, strict=True):
        where = os.path.normpath(os.path.abspath(lib.locate(file)))
        vectors[where] = row
        vectors.setdefault(os.path.realpath(where), row)
    if label is None:
        raise DataError(f"{library} has no embeddings; rerun 'focaltag tag ... -o {library} --embeddings'")
    return vectors, label


def _resolve_base(base: str | os.PathLike[str] | None, library_label: str | None) -> str | os.PathLike[str]:
    """The base spec: ``--base``, else the library's model when it is a catalogue name or an existing path."""
    from focaltag._defaults import DEFAULT_MODEL

    if base is not None:
        from focaltag.models.resolve import resolve_model

        label = resolve_model(base).label
        if library_label is not None and label != library_label:
            raise ConfigError(f"--base {base} is {label}, but the library's embeddings come from {library_label}; "
                              f"pass --base {library_label} (or its file), or drop --library to extract with "
                              f"{label}")
        return base
    if library_label is None:
        return DEFAULT_MODEL
    from focaltag.models.catalogue import catalogue

    if library_label in catalogue() or Path(library_label).exists():
        return library_label
    raise ConfigError(f"the library's embeddings come from {library_label}, which is not a catalogue name; pass "
                      "--base PATH to that model's file")


def _report_missing(missing: Sequence[str], what: str) -> None:
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
        logger.warning("skipping %d %s: %s", len(missing), what, shown)


def _embeddings_for(labels: LabelSet, base: _Base, library: str | os.PathLike[str] | None,
                    library_vectors: Mapping[str, np.ndarray] | None, work: Path,
                    skip_missing: bool) -> tuple[LabelSet, np.ndarray]:
    """Each labelled track's embedding (stored in the library where it is, else extracted and cached)."""
    dim = int(base.tagger.embedding_size)
    x = np.zeros((len(labels.paths), dim), dtype=np.float32)
    todo: list[int] = []
    for i, p in enumerate(labels.paths):
        vec = None
        if library_vectors is not None:
            vec = library_vectors.get(p)
            if vec is None:
                vec = library_vectors.get(os.path.realpath(p))
        if vec is None:
            todo.append(i)
            continue
        if vec.shape != (dim,):
            raise DataError(f"{library} holds {vec.shape[0]}-value embeddings but the base {base.label} gives {dim}; "
                            "train with the library's model as --base, or drop --library")
        x[i] = vec
    if library is not None:
        logger.info("%d of %d track(s) found in %s%s", len(labels.paths) - len(todo), len(labels.paths), library,
                    f"; extracting the other {len(todo)} with {base.label}" if todo else "")
    failures: dict[str, str] = {}
    if todo:
        vectors, failures = extract_embeddings(base, [labels.paths[i] for i in todo], work)
        x[todo] = vectors
    if failures:
        shown = "; ".join(f"{p}: {r}" for p, r in list(failures.items())[:3])
        if not skip_missing:
            raise DataError(f"{len(failures)} file(s) could not be read ({shown}{' ...' if len(failures) > 3 else ''});"
                            f" fix or remove them, or pass --skip-missing to train on the others (the other "
                            f"embeddings are kept in {work})")
        _report_missing(list(failures), "file(s) that could not be read")
        keep = np.array([p not in failures for p in labels.paths])
        labels, x = labels.subset(keep), x[keep]
    return labels, x


# --------------------------------------------------------------------------------------------- the product


def _check_out(out: Path, overwrite: bool) -> None:
    """``--out`` must be new, an unfinished head (only its work folder), or a head to replace (``overwrite``)."""
    from focaltag.models.head import CARD_FILE, CHECKPOINT_FILE, THRESHOLDS_FILE, WORK_DIR, is_head_folder

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the head model")
    if not out.is_dir():
        return
    if is_head_folder(out):
        if not overwrite:
            raise ConfigError(f"--out {out} already holds a trained head; pass --overwrite to replace it or choose "
                              "another folder")
        return
    own = {WORK_DIR, CHECKPOINT_FILE, THRESHOLDS_FILE, CARD_FILE}
    other = sorted(p.name for p in out.iterdir() if p.name not in own and not p.name.startswith("."))
    if other:
        raise ConfigError(f"--out {out} holds other files ({', '.join(other[:3])}); choose a new or empty folder")


def train_head(labels_file: str | os.PathLike[str], out: str | os.PathLike[str], *,
               base: str | os.PathLike[str] | None = None, library: str | os.PathLike[str] | None = None,
               options: HeadOptions | None = None, skip_missing: bool = False, overwrite: bool = False,
               bootstrap: int = BOOTSTRAP, device: str = "cpu", workers: int | None = None) -> HeadReport:
    """``focaltag head train``: labels + base (or a library's stored embeddings) -> a head folder at ``out``.

    Returns the cross-validation report; the folder holds the model (``best.pt``: base and head), its card
    (``card.json``) and thresholds (``thresholds.tsv``). Bad input is refused before anything is written.
    """
    from focaltag.models.head import WORK_DIR

    opts = options or HeadOptions()
    out = Path(out)
    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 2:
        raise ConfigError(f"--bootstrap must be an integer >= 2 (resamples), got {bootstrap!r}")
    labels, missing = load_labels(labels_file, folds=opts.folds, skip_missing=skip_missing)
    _report_missing(missing, "missing file(s)")
    _check_out(out, overwrite)
    library_vectors, library_label = (None, None) if library is None else library_embeddings(library)
    loaded = _load_base(_resolve_base(base, library_label), device=device, workers=workers)
    labels, x = _embeddings_for(labels, loaded, library, library_vectors, out / WORK_DIR, skip_missing)
    check_positives(labels, opts.folds)
    logger.info("cross-validating a head on %d tracks x %d tags (%d folds, %s loss, %s sampling)",
                len(labels.paths), len(labels.tag_names), opts.folds, opts.loss, opts.sampling)
    report = cross_validate_head(x, labels.matrix, labels.tag_names, opts, bootstrap=bootstrap)
    model = _final_model(x, labels, loaded, report)
    card = _card(labels, labels_file, missing, loaded, report, out)
    from focaltag.models.head import save_head

    save_head(out, model, card)
    return report


def _final_model(x: np.ndarray, labels: LabelSet, base: _Base, report: HeadReport) -> Any:
    """The head trained on every track, put after the base networks as one :class:`TagHead`."""
    from focaltag.models.head import TagHead, base_spec

    fit = fit_head(x, labels.matrix, hidden_dim=report.hidden_dim, options=report.options)
    model = TagHead(tag_names=labels.tag_names, hidden_dim=report.hidden_dim, drop_rate=report.options.drop_rate,
                    base=[base_spec(m, name) for m, name in zip(base.members, base.member_labels, strict=True)])
    for member, source in zip(model.members, base.members, strict=True):
        member.load_state_dict(source.state_dict())
    model.head.load_state_dict(fit.head.state_dict())
    return model.eval()


def _card(labels: LabelSet, labels_file: str | os.PathLike[str], missing: Sequence[str], base: _Base,
          report: HeadReport, out: Path) -> dict[str, Any]:
    from focaltag.models.head import HEAD_FORMAT

    return {
        "format": HEAD_FORMAT,
        "version": 1,
        "name": out.resolve().name,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "focaltag_version": __version__,
        "base": {"model": base.label, "members": list(base.member_labels),
                 "embedding_size": int(base.tagger.embedding_size),
                 "embedding": f"mean over {EMBEDDING_CHUNKS} evenly spaced chunks of the layer before the "
                              "classifier (float32)"},
        "labels": {"file": str(Path(labels_file).resolve()), "tracks": len(labels.paths),
                   "skipped_missing": len(missing)},
        "tags": list(labels.tag_names),
        "counts": labels.counts,
        "thresholds": {t: float(v) for t, v in zip(report.tag_names, report.thresholds, strict=True)},
        "cross_validation": report.to_dict(),
    }


def evaluate_head(labels_file: str | os.PathLike[str], model: str | os.PathLike[str], *,
                  skip_missing: bool = False, bootstrap: int = BOOTSTRAP, seed: int = 0, precision: str = "fp32",
                  n_chunks: int = EMBEDDING_CHUNKS, device: str = "cpu", workers: int | None = None
                  ) -> dict[str, Any]:
    """``focaltag head eval``: tag a held-out labelled set with the model as it tags (16 fixed chunks, its own
    thresholds) and score it: ``focaltag.evaluate``'s dictionary with intervals, per-tag intervals included.

    The labels may name a subset of the model's tags; a model tag the labels never name has no positive and
    is left out of the macro averages (with a warning), as ``focaltag evaluate`` does.
    """
    from focaltag.inference import InferenceOptions, Tagger
    from focaltag.inference.tagger import TagResult
    from focaltag.models.head import head_thresholds

    if isinstance(bootstrap, bool) or not isinstance(bootstrap, int) or bootstrap < 2:
        raise ConfigError(f"--bootstrap must be an integer >= 2 (resamples), got {bootstrap!r}")
    labels = read_labels(labels_file)
    labels, missing = check_paths_exist(labels, skip_missing=skip_missing)
    _report_missing(missing, "missing file(s)")
    own = head_thresholds(model) if isinstance(model, (str, os.PathLike)) and Path(model).exists() else None
    options = InferenceOptions(n_chunks=n_chunks, adaptive=False, precision=precision,
                               thresholds=own if own is not None else "auto", device=device, workers=workers)
    tagger = Tagger(model, options)
    unknown = [t for t in labels.tag_names if t not in tagger.tag_names]
    if unknown:
        raise DataError(f"{labels.where()}: tag(s) {', '.join(repr(t) for t in unknown[:10])} are not tags of "
                        f"{tagger.model_name} (its tags: {', '.join(tagger.tag_names[:20])})")
    column = {t: j for j, t in enumerate(labels.tag_names)}
    y = np.zeros((len(labels.paths), len(tagger.tag_names)), dtype=np.int8)
    for j, tag in enumerate(tagger.tag_names):
        if tag in column:
            y[:, j] = labels.matrix[:, column[tag]]
    scores = np.zeros(y.shape, dtype=np.float64)
    failures: dict[str, str] = {}
    for i, result in enumerate(_tag_all(tagger, labels.paths)):
        if isinstance(result, TagResult):
            scores[i] = result.as_array()
        else:
            failures[labels.paths[i]] = str(getattr(result, "error", "failed"))
    if failures:
        if not skip_missing:
            shown = "; ".join(f"{p}: {r}" for p, r in list(failures.items())[:3])
            raise DataError(f"{len(failures)} file(s) could not be read ({shown}); fix or remove them, or pass "
                            "--skip-missing to score the others")
        _report_missing(list(failures), "file(s) that could not be read")
        keep = np.array([p not in failures for p in labels.paths])
        y, scores = y[keep], scores[keep]
    result = _scored(y, scores, tagger.tag_names, tagger.thresholds, n_resamples=bootstrap, seed=seed)
    result["model"] = tagger.model_name
    result["tracks"] = int(len(y))
    result["labels"] = str(Path(labels_file).resolve())
    if tagger.thresholds is not None:
        result["thresholds"] = "the model's own" if own is not None else "the catalogue model's"
    return result


def _tag_all(tagger: Any, paths: Sequence[str]) -> Iterable[Any]:
    from focaltag._progress import progress

    with progress(total=len(paths), desc="tag", unit="file") as bar:
        for result in tagger.tag_many(list(paths)):
            yield result
            bar.update(1)


"""Models as the tagger sees them: one checkpoint, a run dir, an ensemble dir, or several of those averaged.

Ensemble directory format (``save_ensemble`` writes it, ``load_members`` reads it)::

    my-ensemble/
      ensemble.json        the manifest below
      member-00.pt ...     slim focaltag checkpoints (any path load_model accepts also works)

    ensemble.json = {
      "format": "focaltag-ensemble",   # fixed marker
      "version": 1,
      "combine": "mean-sigmoid",       # weighted mean of each member's sigmoid probabilities
      "tag_names": ["mood/theme---action", ...],   # every member must have exactly this list
      "members": [{"path": "member-00.pt", "weight": 1.0}, ...]   # paths relative to the folder
    }

Weights default to 1.0 (the paper's plain mean); the combination is ``sum(w_i p_i) / sum(w_i)``.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from focaltag.errors import CheckpointError, ConfigError, ModelError
from focaltag.inference.meta import ModelMeta, model_meta
from focaltag.inference.precision import (
    Precision,
    autocast,
    bf16_inference_model,
    fp32_modules,
    resolve_model_precision,
)

__all__ = [
    "ENSEMBLE_MANIFEST",
    "Member",
    "TorchMember",
    "save_ensemble",
    "read_ensemble",
    "load_members",
    "check_members",
    "model_meta",
    "model_label",
]

logger = logging.getLogger(__name__)

ENSEMBLE_MANIFEST = "ensemble.json"
ENSEMBLE_FORMAT = "focaltag-ensemble"
Runtime = Literal["torch", "onnx"]
Optimize = Literal["none", "channels_last", "compile"]


class Member(Protocol):
    """One network of an ensemble: waveform chunks at ``sample_rate`` -> sigmoid probabilities."""

    name: str
    tag_names: tuple[str, ...]
    sample_rate: int
    chunk_samples: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


class TorchMember:
    """A torch model in eval mode, optionally channels_last and/or ``torch.compile``d, run in ``precision``.

    ``precision`` ``"auto"`` is bf16 on CPUs with AMX / AVX512-BF16 and on bf16 GPUs, else float32
    (:func:`focaltag.inference.precision.resolve_model_precision`: Musicnn stays float32 on CPUs, where bf16 did
    not pay off); ``self.precision`` is the resolved one. Under bf16 a copy made by
    :func:`focaltag.inference.precision.bf16_inference_model` runs under autocast (bf16 weights, channels_last,
    the architecture's ``precision.FP32_MODULES``, the layers that read the spectrogram, computed to float32
    grade; ``self.fp32_modules``; not with ``optimize="compile"``); float32 calls run ``model`` untouched.
    """

    def __init__(self, model: Any, *, name: str = "model", device: str = "cpu", optimize: Optimize = "none",
                 precision: Precision = "auto") -> None:
        import torch

        meta = model_meta(model)
        self.name = name
        self.precision = resolve_model_precision(precision, device, model)
        self.tag_names, self.sample_rate, self.chunk_samples = meta.tag_names, meta.sample_rate, meta.chunk_samples
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        if optimize not in ("none", "channels_last", "compile"):
            raise ConfigError(f"optimize must be 'none', 'channels_last' or 'compile', got {optimize!r}")
        if optimize in ("channels_last", "compile"):
            self.model = self.model.to(memory_format=torch.channels_last)
        # bf16 runs a bf16-weight, channels_last copy whose spectrogram-reading layers are float32-grade;
        # ``self.model`` stays the untouched float32 reference (``precision="fp32"`` calls, close-call re-checks)
        self.fp32_modules = fp32_modules(self.model) if self.precision == "bf16" and optimize != "compile" else ()
        self._bf16_model = (bf16_inference_model(self.model, self.fp32_modules)
                            if self.precision == "bf16" and optimize != "compile" else None)
        self._fn = torch.compile(self.model, dynamic=False) if optimize == "compile" else self.model
        # a compiled graph is specialised to one batch size: later batches are padded to the first one's size
        self._fixed_batch: int | None = None if optimize == "compile" else 0

    def __call__(self, batch: np.ndarray, *, precision: str | None = None) -> np.ndarray:
        """Sigmoid probabilities of a batch; ``precision`` overrides ``self.precision`` for this call."""
        import torch

        batch = np.ascontiguousarray(batch, dtype=np.float32)
        n = len(batch)
        if self._fixed_batch is None:
            self._fixed_batch = n
        if self._fixed_batch and n != self._fixed_batch:
            if n > self._fixed_batch:
                return np.concatenate([self(batch[i:i + self._fixed_batch], precision=precision)
                                       for i in range(0, n, self._fixed_batch)])
            batch = np.concatenate([batch, np.zeros((self._fixed_batch - n, batch.shape[1]), dtype=np.float32)])
        with torch.inference_mode(), warnings.catch_warnings():
            # inductor notes once that the STFT's complex ops stay in eager mode; nothing for the user to do
            warnings.filterwarnings("ignore", message="Torchinductor does not support code generation for complex")
            x = torch.from_numpy(batch).to(self.device)
            run = precision or self.precision
            fn = self._bf16_model if run == "bf16" and self._bf16_model is not None else self._fn
            with autocast(self.device, run):
                logits = fn(x)
            return torch.sigmoid(logits.float()).cpu().numpy()[:n]


def _load_torch(path: Path) -> Any:
    from focaltag.models import load_model

    return load_model(path)


def _validate_weights(weights: Sequence[float] | None, n: int, where: str) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = [float(x) for x in weights]
    if len(w) != n:
        raise ConfigError(f"{where}: {n} members but {len(w)} weights; give one weight per member")
    if any(not np.isfinite(x) or x < 0 for x in w) or sum(w) <= 0:
        raise ConfigError(f"{where}: weights must be finite, >= 0 and not all 0, got {w}")
    return w


def save_ensemble(directory: str | os.PathLike[str], members: Sequence[Any],
                  weights: Sequence[float] | None = None) -> Path:
    """Write a self-contained ensemble folder: each member as a slim checkpoint plus ``ensemble.json``.

    ``members`` are torch models or anything ``load_model`` accepts (checkpoint file, run dir).
    Returns the manifest path.
    """
    from focaltag._io import write_json
    from focaltag.models import save_model

    if not members:
        raise ConfigError("save_ensemble needs at least one member")
    directory = Path(directory)
    w = _validate_weights(weights, len(members), str(directory))
    models = [m if hasattr(m, "state_dict") else _load_torch(Path(m)) for m in members]
    metas = [model_meta(m) for m in models]
    _check_metas(metas, [str(m) if not hasattr(m, "state_dict") else f"member {i}" for i, m in enumerate(members)])
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (model, weight) in enumerate(zip(models, w, strict=True)):
        name = f"member-{i:02d}.pt"
        save_model(model, directory / name)
        entries.append({"path": name, "weight": weight})
    manifest = {"format": ENSEMBLE_FORMAT, "version": 1, "combine": "mean-sigmoid",
                "tag_names": list(metas[0].tag_names), "members": entries}
    path = directory / ENSEMBLE_MANIFEST
    write_json(path, manifest)
    return path


def read_ensemble(directory: str | os.PathLike[str]) -> tuple[list[Path], list[float], list[str] | None]:
    """Member paths, weights and the declared tag list of an ensemble folder."""
    directory = Path(directory)
    path = directory / ENSEMBLE_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{directory} has no {ENSEMBLE_MANIFEST}; write one with "
                              "focaltag.inference.save_ensemble") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ENSEMBLE_FORMAT:
        raise CheckpointError(f"{path}: expected \"format\": \"{ENSEMBLE_FORMAT}\"; not a focaltag ensemble manifest")
    if manifest.get("version") != 1:
        raise CheckpointError(f"{path}: unsupported ensemble version {manifest.get('version')!r} (this focaltag reads 1)")
    if manifest.get("combine", "mean-sigmoid") != "mean-sigmoid":
        raise CheckpointError(f"{path}: unknown combine rule {manifest.get('combine')!r}; expected 'mean-sigmoid'")
    entries = manifest.get("members")
    if not isinstance(entries, list) or not entries:
        raise CheckpointError(f"{path}: \"members\" must be a non-empty list of {{\"path\", \"weight\"}} objects")
    paths, weights = [], []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise CheckpointError(f"{path}: members[{i}] needs a \"path\" string")
        member = Path(entry["path"])
        paths.append(member if member.is_absolute() else directory / member)
        weights.append(entry.get("weight", 1.0))
    tags = manifest.get("tag_names")
    return paths, _validate_weights(weights, len(paths), str(path)), (list(tags) if tags else None)


def is_ensemble_dir(path: Path) -> bool:
    return path.is_dir() and (path / ENSEMBLE_MANIFEST).is_file()


def _check_metas(metas: Sequence[ModelMeta], names: Sequence[str]) -> None:
    first = metas[0]
    for meta, name in zip(metas[1:], names[1:], strict=True):
        if meta.tag_names != first.tag_names:
            diff = sorted(set(meta.tag_names) ^ set(first.tag_names))
            what = f"they differ in {', '.join(diff[:5])}" if diff else "same tags in another order"
            raise ModelError(f"ensemble members need identical tag lists: {name} has {len(meta.tag_names)} tags, "
                             f"{names[0]} has {len(first.tag_names)} ({what})")
        if (meta.sample_rate, meta.chunk_samples) != (first.sample_rate, first.chunk_samples):
            raise ModelError(f"ensemble members need the same input: {name} takes {meta.chunk_samples} samples at "
                             f"{meta.sample_rate} Hz, {names[0]} takes {first.chunk_samples} at {first.sample_rate} Hz")


def check_members(members: Sequence[Member]) -> None:
    """Raise ModelError unless all members share tag list, sample rate and chunk length."""
    _check_metas([ModelMeta(m.tag_names, m.sample_rate, m.chunk_samples) for m in members],
                 [m.name for m in members])


def _expand(spec: Any) -> list[tuple[Any, float]]:
    """One model spec -> [(model-or-path, weight)]; ensemble folders expand to their members."""
    if hasattr(spec, "state_dict") or callable(getattr(spec, "run", None)):
        return [(spec, 1.0)]
    from focaltag.models.catalogue import resolve_spec

    path = Path(resolve_spec(spec))  # a catalogue name -> its cached path, pulled on first use
    if not path.exists():
        raise CheckpointError(f"model not found: {path}; pass a checkpoint (.pt), a run folder, an ensemble "
                              "folder, an .onnx file or a catalogue name ('focaltag models list')")
    from focaltag.inference.files import AUDIO_EXTENSIONS

    if path.suffix.lower() in AUDIO_EXTENSIONS:
        raise CheckpointError(f"{path} is an audio file, not a model; pass a checkpoint (.pt), a run folder, an "
                              "ensemble folder or an .onnx file as the model")
    if is_ensemble_dir(path):
        paths, weights, _ = read_ensemble(path)
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise CheckpointError(f"{path / ENSEMBLE_MANIFEST}: member {missing[0]} does not exist")
        return list(zip(paths, weights, strict=True))
    return [(path, 1.0)]


def model_label(specs: Any) -> str:
    """What ``tag --format json`` calls the model: the catalogue name, else the checkpoint's file name (or the
    run / ensemble folder's name); several are joined with ``+``."""
    if isinstance(specs, (str, os.PathLike)) or not isinstance(specs, Sequence):
        specs = [specs]
    names = []
    for spec in specs:
        if isinstance(spec, (str, os.PathLike)):
            names.append(Path(spec).name)
        else:
            names.append(str(getattr(spec, "catalogue_name", None) or getattr(spec, "model_name", None)
                             or type(spec).__name__))
    return "+".join(names)


def load_members(specs: Any, *, runtime: Runtime = "torch", device: str = "cpu",
                 optimize: Optimize = "none", precision: Precision = "auto") -> tuple[list[Member], np.ndarray]:
    """Resolve model specs (models, paths, ensemble dirs, ``.onnx`` files) into members and normalised weights.

    Torch members run in ``precision`` (see :class:`TorchMember`); onnxruntime members always in float32.
    """
    if runtime not in ("torch", "onnx"):
        raise ConfigError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
    if runtime == "onnx" and precision == "bf16":
        raise ConfigError("precision bf16 needs the torch runtime (onnxruntime runs float32); use --precision auto "
                          "or fp32 with --runtime onnx")
    if runtime == "torch":
        from focaltag.devices import resolve_device

        device = resolve_device(device)  # one line for 'gpu', or cuda on a CPU-only machine
    if isinstance(specs, (str, os.PathLike)) or not isinstance(specs, Sequence):
        specs = [specs]
    if not specs:
        raise ConfigError("no model given; pass at least one model (checkpoint, run folder or ensemble folder)")
    expanded = [item for spec in specs for item in _expand(spec)]
    members: list[Member] = []
    for i, (item, _) in enumerate(expanded):
        name = str(item) if isinstance(item, Path) else f"model {i}"
        is_onnx = isinstance(item, Path) and item.suffix.lower() == ".onnx"
        if runtime == "onnx":
            from focaltag.inference.onnx_model import OnnxMember

            if is_onnx:
                members.append(OnnxMember.from_file(item))
            elif isinstance(item, Path):
                members.append(OnnxMember.from_checkpoint(item))
            else:
                members.append(OnnxMember.from_torch(item, name=name))
        elif is_onnx:
            raise ConfigError(f"{item} is an ONNX model; tag it with runtime='onnx' (--runtime onnx)")
        else:
            model = _load_torch(item) if isinstance(item, Path) else item
            members.append(TorchMember(model, name=name, device=device, optimize=optimize, precision=precision))
    check_members(members)
    weights = np.asarray([w for _, w in expanded], dtype=np.float64)
    return members, weights / weights.sum()

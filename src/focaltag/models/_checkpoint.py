"""Checkpoints: focaltag's own format, run directories, and plain state_dicts (converted) of the paper code's
short-chunk ResNet and of Won et al. (2020)'s FCN / CRNN / Musicnn."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from focaltag._io import save_torch
from focaltag.data.tags import MOODTHEME_TAGS
from focaltag.errors import CheckpointError, FocaltagError, first_line
from focaltag.models._factory import create_model
from focaltag.models.meta import cfg_of
from focaltag.models.resnet import N_FFT, VARIANTS

logger = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_VERSION",
    "model_checkpoint",
    "save_model",
    "load_model",
    "read_checkpoint",
    "checkpoint_version",
    "resolve_checkpoint_path",
    "convert_reference_state_dict",
    "convert_won2020_state_dict",
    "won2020_architecture",
    "load_matching_weights",
    "unwrap_model",
]

CHECKPOINT_VERSION = 1
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
_REF_BLOCK = re.compile(r"^layer(\d+)(_2_3)?\.(conv|bn)_([123])\.(.+)$")
_REF_BLOCK_PARTS = {("conv", "1"): "conv1", ("bn", "1"): "bn1", ("conv", "2"): "conv2", ("bn", "2"): "bn2",
                    ("conv", "3"): "downsample.0", ("bn", "3"): "downsample.1"}
_REF_TOP = {"spec.spectrogram.window": "frontend.window", "spec.mel_scale.fb": "frontend.fb"}
_REF_PREFIXES = {"spec_bn.": "spec_bn.", "dense_1.": "head.fc1.", "dense1.": "head.fc1.", "bn_1.": "head.bn.",
                 "bn.": "head.bn.", "dense_2.": "fc.", "dense2.": "fc."}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def model_checkpoint(model: nn.Module) -> dict[str, Any]:
    """The slim, ``weights_only``-loadable checkpoint dict of a focaltag model (training adds its state to it)."""
    model = unwrap_model(model)
    cfg = getattr(model, "pretrained_cfg", None)
    args = getattr(model, "model_args", None)
    if cfg is None or args is None:
        raise CheckpointError(f"{type(model).__name__} is not a focaltag model (no pretrained_cfg/model_args); "
                              "build it with focaltag.create_model")
    return {
        "focaltag_checkpoint": CHECKPOINT_VERSION,
        "model_name": getattr(model, "model_name", "short_chunk_resnet"),
        "model_args": dict(args),
        "tag_names": list(cfg.tag_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def save_model(model: nn.Module, path: str | os.PathLike[str], **extra: Any) -> Path:
    """Atomically write ``model`` as a focaltag inference checkpoint (plus ``extra`` plain-data entries)."""
    ckpt = model_checkpoint(model)
    clash = sorted(set(extra) & set(ckpt))
    if clash:
        raise CheckpointError(f"save_model: extra entries {', '.join(clash)} would overwrite checkpoint fields")
    ckpt.update(extra)
    path = Path(path)
    save_torch(path, ckpt)
    logger.info("saved model checkpoint %s", path)
    return path


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file, or for a run directory its ``best.pt`` (else ``last.pt``)."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"run directory {path} has no best.pt or last.pt; train into it first or pass a "
                              "checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_checkpoint(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> tuple[Any, Path]:
    """``torch.load(weights_only=True)`` of a checkpoint file or run directory, with one-line errors."""
    file = resolve_checkpoint_path(path)
    try:
        obj = torch.load(file, map_location=map_location, weights_only=True)
    except Exception as err:  # pickle/zip/EOF errors of every kind mean "not a checkpoint we can read"
        raise CheckpointError(f"{file}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                              f"{first_line(err, limit=160)})") from None
    return obj, file


def checkpoint_version(obj: Any, file: str | os.PathLike[str]) -> int | None:
    """The ``"focaltag_checkpoint"`` format version of a loaded checkpoint, ``None`` for other objects.

    The one rule for the version field, used by ``load_model`` and the training loop alike: any version up to
    ``CHECKPOINT_VERSION`` is read; a newer (or non-integer) one is a CheckpointError asking to upgrade.
    """
    if not isinstance(obj, Mapping) or "focaltag_checkpoint" not in obj:
        return None
    version = obj["focaltag_checkpoint"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{file}: damaged focaltag checkpoint (format version {version!r}, expected an "
                              f"integer 1..{CHECKPOINT_VERSION})")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{file}: focaltag checkpoint format {version!r} is newer than this focaltag "
                              f"reads ({CHECKPOINT_VERSION}); upgrade focaltag")
    return version


def _strip_wrappers(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``module.`` / ``_orig_mod.`` prefixes left by DDP and torch.compile."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def is_reference_layout(state_dict: Mapping[str, Any]) -> bool:
    """Whether keys look like the paper code's ``ShortChunkCNN_Res`` (``layer1.conv_1.weight``, ``dense_2``)."""
    return "layer1.conv_1.weight" in state_dict and ("dense_2.weight" in state_dict or "dense2.weight" in state_dict)


def convert_reference_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename a reference-layout state_dict to focaltag's names and infer the architecture it describes.

    Returns ``(converted, info)``; ``info`` holds ``n_tags``, ``width``, ``hidden_dim``, ``n_mels``, ``n_fft``,
    ``variant`` (``"paper"`` for ``layer6_2_3``/``layer7_2_3`` blocks, ``"won2020"`` for plain ``layer6``/
    ``layer7``) and ``unconverted`` (keys kept under their own names because they have no counterpart).
    """
    sd = _strip_wrappers(state_dict)
    if not is_reference_layout(sd):
        raise CheckpointError("not a reference-layout state_dict (expected keys layer1.conv_1.weight and "
                              "dense_2.weight)")
    out: dict[str, torch.Tensor] = {}
    unconverted: list[str] = []
    blocks: dict[int, bool] = {}
    for key, value in sd.items():
        new = _convert_key(key, blocks)
        if new is None:
            unconverted.append(key)
            new = key
        out[new] = value
    if sorted(blocks) != list(range(1, len(VARIANTS["paper"].strides) + 1)):
        raise CheckpointError(f"reference state_dict has blocks {sorted(blocks)}; expected layer1..layer7")
    strided = {i for i, s in blocks.items() if s}
    variant = "paper" if strided == {6, 7} else "won2020" if not strided else None
    fc = out.get("fc.weight")
    fb = out.get("frontend.fb")
    info = {
        "layout": "reference",
        "variant": variant,
        "n_tags": int(fc.shape[0]) if fc is not None else None,
        "hidden_dim": int(fc.shape[1]) if fc is not None else None,
        "width": int(out["blocks.0.conv1.weight"].shape[0]),
        "n_mels": int(fb.shape[1]) if fb is not None else None,
        "n_fft": 2 * (int(fb.shape[0]) - 1) if fb is not None else None,
        "unconverted": unconverted,
    }
    return out, info


def _convert_key(key: str, blocks: dict[int, bool]) -> str | None:
    """One reference key -> focaltag key (records block index and whether it was a ``_2_3`` block)."""
    if key in _REF_TOP:
        return _REF_TOP[key]
    m = _REF_BLOCK.match(key)
    if m:
        index = int(m.group(1))
        blocks[index] = blocks.get(index, False) or bool(m.group(2))
        return f"blocks.{index - 1}.{_REF_BLOCK_PARTS[(m.group(3), m.group(4))]}.{m.group(5)}"
    for prefix, new in _REF_PREFIXES.items():
        if key.startswith(prefix):
            return new + key[len(prefix):]
    return None


def won2020_architecture(state_dict: Mapping[str, Any]) -> str | None:
    """``"fcn"``, ``"crnn"`` or ``"musicnn"`` when the keys are those of Won et al. (2020)'s published models.

    The body keys are the same in their checkpoints and in focaltag's modules (only the front end differs:
    ``spec.*`` upstream, ``frontend.*`` here), so both spellings are recognised. FCN has five ``layerN.conv``
    blocks and ``dense``; CRNN four blocks, a GRU ``layer5`` and ``dense``; Musicnn the ``layers.N`` branches,
    three ``layerN.conv`` back-end blocks and ``dense1``/``bn``/``dense2``.
    """
    keys = state_dict.keys()
    if "layers.0.conv.weight" in keys and "dense2.weight" in keys and "layer1.conv.weight" in keys:
        return "musicnn"
    if "layer5.weight_ih_l0" in keys and "dense.weight" in keys and "layer1.conv.weight" in keys:
        return "crnn"
    if "layer5.conv.weight" in keys and "dense.weight" in keys and "layer6.conv.weight" not in keys:
        return "fcn"
    return None


def convert_won2020_state_dict(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor], dict[str, Any]]:
    """A Won et al. (2020) FCN / CRNN / Musicnn state_dict -> ``(model_name, model_args, converted, info)``.

    Renames torchaudio's front-end buffers to focaltag's and reads the sizes the other arguments take from
    the tensor shapes (tag count, GRU width, Musicnn back-end and dense widths).
    """
    sd = _strip_wrappers(state_dict)
    name = won2020_architecture(sd)
    if name is None:
        raise CheckpointError("not a Won et al. (2020) FCN / CRNN / Musicnn state_dict")
    out = {_REF_TOP.get(k, k): v for k, v in sd.items()}
    classifier = out["dense2.weight" if name == "musicnn" else "dense.weight"]
    args: dict[str, Any] = {"n_tags": int(classifier.shape[0])}
    if name == "crnn" and "layer5.weight_hh_l0" in out:
        args["hidden_size"] = int(out["layer5.weight_hh_l0"].shape[1])
    if name == "musicnn":
        args["backend_channels"] = int(out["layer1.conv.weight"].shape[0])
        if "dense1.weight" in out:
            args["dense_channels"] = int(out["dense1.weight"].shape[0])
    fb = out.get("frontend.fb")
    info = {
        "layout": f"won2020-{name}",
        "variant": None,
        "n_tags": args["n_tags"],
        "n_mels": int(fb.shape[1]) if fb is not None else None,
        "n_fft": 2 * (int(fb.shape[0]) - 1) if fb is not None else None,
        "unconverted": [],
    }
    return name, args, out, info


def _plain_focaltag_info(sd: Mapping[str, torch.Tensor]) -> dict[str, Any] | None:
    """Architecture of a bare focaltag state_dict (``blocks.0.conv1.weight`` ... ``fc.weight``), else None."""
    if "blocks.0.conv1.weight" not in sd or "fc.weight" not in sd:
        return None
    fb = sd.get("frontend.fb")
    return {
        "layout": "focaltag-state-dict",
        "variant": None,
        "n_tags": int(sd["fc.weight"].shape[0]),
        "hidden_dim": int(sd["fc.weight"].shape[1]),
        "width": int(sd["blocks.0.conv1.weight"].shape[0]),
        "n_mels": int(fb.shape[1]) if fb is not None else None,
        "n_fft": 2 * (int(fb.shape[0]) - 1) if fb is not None else None,
    }


def _parse(obj: Any, file: Path) -> tuple[str, dict[str, Any], list[str] | None, dict[str, torch.Tensor], dict[str, Any]]:
    """Any supported checkpoint object -> (model_name, model_args, tag_names, state_dict, info)."""
    if checkpoint_version(obj, file) is not None:
        missing = [k for k in ("model_name", "model_args", "state_dict") if k not in obj]
        if missing or not isinstance(obj["model_args"], Mapping) or not _is_state_dict(obj["state_dict"]):
            raise CheckpointError(f"{file}: damaged focaltag checkpoint (missing or malformed "
                                  f"{', '.join(missing) or 'model_args/state_dict'})")
        names = obj.get("tag_names")
        return (str(obj["model_name"]), dict(obj["model_args"]), None if names is None else list(names),
                _strip_wrappers(obj["state_dict"]), {"layout": "focaltag"})
    if isinstance(obj, Mapping) and not _is_state_dict(obj) and _is_state_dict(obj.get("state_dict")):
        obj = obj["state_dict"]  # {"state_dict": ...} wrappers of other trainers
    if not _is_state_dict(obj):
        raise CheckpointError(f"{file}: not a focaltag checkpoint or a state_dict (got {type(obj).__name__})")
    sd = _strip_wrappers(obj)
    if won2020_architecture(sd) is not None:
        name, won_args, sd, info = convert_won2020_state_dict(sd)
        if (info["n_fft"], info["n_mels"]) not in ((None, None), (N_FFT, 96)):
            raise CheckpointError(f"{file}: {name} mel filterbank is for n_fft={info['n_fft']}, "
                                  f"{info['n_mels']} bands; Won et al.'s {name} uses n_fft={N_FFT}, 96 bands")
        return name, won_args, None, sd, info
    if is_reference_layout(sd):
        sd, info = convert_reference_state_dict(sd)
    else:
        plain = _plain_focaltag_info(sd)
        if plain is None:
            shown = ", ".join(list(sd)[:4])
            raise CheckpointError(f"{file}: unknown state_dict layout (first keys: {shown}); expected a focaltag "
                                  "checkpoint, the paper code's ShortChunkCNN_Res layout or Won et al.'s "
                                  "FCN / CRNN / Musicnn")
        info = plain
    if info["n_fft"] not in (None, N_FFT):
        raise CheckpointError(f"{file}: mel filterbank is for n_fft={info['n_fft']}; focaltag models use "
                              f"n_fft={N_FFT}")
    args = {"n_tags": info["n_tags"], "width": info["width"], "hidden_dim": info["hidden_dim"],
            "variant": info["variant"] or "paper"}
    if info["n_mels"] is not None:
        args["n_mels"] = info["n_mels"]
    return "short_chunk_resnet", args, None, sd, info


def load_model(
    path: str | os.PathLike[str],
    *,
    map_location: Any = "cpu",
    variant: str | None = None,
    tag_names: Sequence[str] | None = None,
) -> nn.Module:
    """Load a model in eval mode from a focaltag checkpoint, a run directory or a published state_dict.

    Published state_dicts: the paper code's ``ShortChunkCNN_Res`` and Won et al. (2020)'s FCN, CRNN and
    Musicnn (the architecture is read from the keys; tensors saved on CUDA load on ``map_location``). Their
    tag names are not in the file: pass ``tag_names`` (e.g. the 50 MagnaTagATune tags).

    Args:
        path (path): A ``.pt`` file or a run directory (its ``best.pt``, else ``last.pt``).
        map_location (str or torch.device, optional): Where tensors are loaded and the model is put.
            (Default: ``"cpu"``)
        variant (str or None, optional): Override the receptive-field variant; needed only for bare state_dicts
            whose layer names do not tell it. (Default: ``None`` = from the checkpoint, else ``"paper"``)
        tag_names (sequence of str or None, optional): Output tag names, required for a bare state_dict with
            other than 56 outputs. (Default: ``None`` = the checkpoint's, else the 56 mood/theme tags)

    Raises:
        CheckpointError: missing file, unreadable file, unknown layout, or a tag list that does not fit.
    """
    obj, file = read_checkpoint(path, map_location=map_location)
    name, args, names, sd, info = _parse(obj, file)
    n_tags = args.get("n_tags")
    if tag_names is not None:
        names = [str(t) for t in tag_names]
    if names is None and n_tags is not None and n_tags != len(MOODTHEME_TAGS):
        raise CheckpointError(f"{file}: the state_dict has {n_tags} outputs; pass tag_names= with {n_tags} names "
                              "in the model's output order")
    if names is not None and n_tags is not None and len(names) != n_tags:
        raise CheckpointError(f"{file}: the model has {n_tags} outputs but {len(names)} tag names were given")
    if variant is not None:
        if not name.startswith("short_chunk_resnet"):
            raise CheckpointError(f"{file}: variant applies to short-chunk ResNet checkpoints only; this one is "
                                  f"a {name} ({info['layout']} layout); leave the variant out")
        args["variant"] = variant
    args.pop("tag_names", None)
    try:
        model = create_model(name, tag_names=names, **args)
    except FocaltagError as err:
        raise CheckpointError(f"{file}: cannot build model {name!r} from the checkpoint ({err})") from None
    _load_strict(model, sd, file)
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    logger.info("loaded %s (%s layout, %s, %d tags)", file, info["layout"], args.get("variant", name),
                cfg_of(model).n_tags)
    return model.eval()


def _load_strict(model: nn.Module, sd: Mapping[str, torch.Tensor], file: Path) -> None:
    """``load_state_dict(strict=True)`` with one line naming what does not fit.

    Mel filterbank / window buffers absent from the checkpoint (older exports) keep the model's computed ones.
    """
    own = model.state_dict()
    absent_frontend = [k for k in own if k.startswith("frontend.") and k not in sd]
    if absent_frontend:
        logger.info("%s has no %s; using the computed front-end buffers", file, ", ".join(absent_frontend))
        sd = {**sd, **{k: own[k] for k in absent_frontend}}
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in sd and sd[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong)):
        if items:
            problems.append(f"{label}: {', '.join(items[:3])}{' ...' if len(items) > 3 else ''}")
    if problems:
        raise CheckpointError(f"{file}: state_dict does not fit the model ({'; '.join(problems)})")
    model.load_state_dict(sd, strict=True)


def load_matching_weights(
    model: nn.Module, path: str | os.PathLike[str], *, map_location: Any = "cpu"
) -> tuple[list[str], list[tuple[str, str]]]:
    """Copy every checkpoint entry whose name and shape match ``model`` (``--init-from``, e.g. MSD weights).

    A reference-layout state_dict is converted to focaltag names first. Returns ``(loaded_keys, skipped)``
    where ``skipped`` lists ``(checkpoint_key, reason)``; model entries absent from the checkpoint keep
    their current values.
    """
    obj, file = read_checkpoint(path, map_location=map_location)
    _, _, _, sd, _ = _parse(obj, file)
    target = unwrap_model(model)
    own = target.state_dict()
    take: dict[str, torch.Tensor] = {}
    skipped: list[tuple[str, str]] = []
    for key, value in sd.items():
        if key not in own:
            skipped.append((key, "not in model"))
        elif own[key].shape != value.shape:
            skipped.append((key, f"shape {tuple(value.shape)} != model {tuple(own[key].shape)}"))
        else:
            take[key] = value
    target.load_state_dict(take, strict=False)
    loaded = [k for k in own if k in take]
    logger.info("init from %s: loaded %d tensors, skipped %d", file, len(loaded), len(skipped))
    return loaded, skipped

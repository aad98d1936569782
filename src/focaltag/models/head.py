"""Your own tags as a model: a base tagger's embedding followed by a small head trained on your labels.

``focaltag head train`` writes a *head folder*, which loads like a run folder wherever a model is accepted
(``tag``, library runs, ``serve``, beets, ``--ray``, ``predict``, ``export --onnx``, ``focaltag.load_model``)::

    best.pt          # a focaltag checkpoint of model "tag_head": the base network(s) and the head, one file
    card.json        # the model card: labels, counts per tag, cross-validated metrics, loss, date, base, thresholds
    thresholds.tsv   # the same thresholds as TAG<TAB>VALUE lines (the format of 'evaluate --save-thresholds')
    work/            # the embedding cache of training (resumable; not part of the model)

:class:`TagHead` runs each base member up to the layer before its classifier (``forward_head(...,
pre_logits=True)``), concatenates the members' vectors in member order (an ensemble base) and applies
:class:`EmbeddingHead`: a standardisation stored with the weights, then one linear layer or one hidden layer. So
tagging costs one forward of the base plus the head. The card's ``thresholds`` are the head's own decision
thresholds, as a catalogue model's (:func:`head_thresholds`, read by :mod:`focaltag.models.resolve`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from focaltag.errors import CheckpointError, ModelError
from focaltag.models._factory import create_model
from focaltag.models._registry import register_model
from focaltag.models.facts import RuntimeFacts, runtime_facts
from focaltag.models.meta import cfg_of
from focaltag.models.resnet import _check_tag_names

__all__ = ["TagHead", "EmbeddingHead", "tag_head", "base_spec", "embedding_size", "member_embedding",
           "HEAD_FORMAT", "CARD_FILE", "CHECKPOINT_FILE", "THRESHOLDS_FILE", "WORK_DIR", "is_head_folder",
           "head_folder_of", "read_card", "head_thresholds", "save_head", "is_head_source", "heads_dir",
           "imported_head", "import_head"]

HEAD_FORMAT = "focaltag-head"
CARD_FILE = "card.json"
CHECKPOINT_FILE = "best.pt"
THRESHOLDS_FILE = "thresholds.tsv"
WORK_DIR = "work"


class EmbeddingHead(nn.Module):
    """Embedding ``(B, D)`` -> standardised -> [linear ``hidden_dim`` -> ReLU -> dropout] -> linear -> logits.

    ``mean`` and ``scale`` are buffers (saved with the weights): the standardisation fitted on the training
    embeddings, so the head sees inputs of unit scale whatever the base network.

    Args:
        in_features (int): Embedding size ``D``.
        n_tags (int): Output tags.
        hidden_dim (int, optional): Units of the hidden layer; 0 for a linear head. (Default: ``0``)
        drop_rate (float, optional): Dropout after the hidden layer. (Default: ``0.0``)
    """

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, in_features: int, n_tags: int, *, hidden_dim: int = 0, drop_rate: float = 0.0) -> None:
        super().__init__()
        for name, value, least in (("in_features", in_features, 1), ("n_tags", n_tags, 1),
                                   ("hidden_dim", hidden_dim, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ModelError(f"EmbeddingHead: {name} must be an integer >= {least}, got {value!r}")
        if not 0.0 <= float(drop_rate) < 1.0:
            raise ModelError(f"EmbeddingHead: drop_rate must be in [0, 1), got {drop_rate!r}")
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        self.hidden = nn.Linear(in_features, hidden_dim) if hidden_dim else None
        self.dropout = nn.Dropout(float(drop_rate))
        self.fc = nn.Linear(hidden_dim or in_features, n_tags)

    @property
    def hidden_dim(self) -> int:
        return self.hidden.out_features if self.hidden is not None else 0

    @torch.no_grad()
    def set_standardization(self, mean: Any, scale: Any) -> None:
        """Store the training embeddings' per-feature mean and scale (a zero scale is taken as 1)."""
        m = torch.as_tensor(mean, dtype=self.mean.dtype).flatten()
        s = torch.as_tensor(scale, dtype=self.scale.dtype).flatten()
        if m.shape != self.mean.shape or s.shape != self.scale.shape:
            raise ModelError(f"EmbeddingHead: standardisation needs {self.mean.numel()} values, got "
                             f"{m.numel()} and {s.numel()}")
        self.mean.copy_(m)
        self.scale.copy_(torch.where(s > 0, s, torch.ones_like(s)))

    @torch.no_grad()
    def set_output_bias(self, value: float | Sequence[float] | torch.Tensor) -> None:
        """Set the output layer's bias (a scalar for every tag, or one value per tag)."""
        bias = torch.as_tensor(value, dtype=self.fc.bias.dtype)
        if bias.ndim == 0:
            self.fc.bias.fill_(bias)
        elif bias.shape == self.fc.bias.shape:
            self.fc.bias.copy_(bias)
        else:
            raise ModelError(f"set_output_bias: expected a scalar or {self.fc.out_features} values, got shape "
                             f"{tuple(bias.shape)}")

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """``(B, D)`` embeddings -> ``(B, n_tags)`` logits (``pre_logits``: the input of the output layer)."""
        x = (x - self.mean) / self.scale
        if self.hidden is not None:
            x = self.dropout(torch.relu(self.hidden(x)))
        return x if pre_logits else self.fc(x)


def base_spec(model: nn.Module, label: str | None = None) -> dict[str, Any]:
    """What :class:`TagHead` needs to rebuild a base member: architecture, arguments and tag names (plain data)."""
    args = getattr(model, "model_args", None)
    name = getattr(model, "model_name", None)
    if not isinstance(args, Mapping) or not isinstance(name, str):
        raise ModelError(f"{type(model).__name__} is not a focaltag model (no model_name / model_args); a head's "
                         "base must be a focaltag checkpoint, run folder, ensemble folder or catalogue name")
    if name == "tag_head":
        raise ModelError("the base is itself a head model; train a head on the base it was built from instead")
    spec: dict[str, Any] = {"model_name": name, "model_args": dict(args), "tag_names": list(cfg_of(model).tag_names)}
    if label is not None:
        spec["label"] = label
    return spec


def embedding_size(model: nn.Module) -> int:
    """Size of ``forward_head(..., pre_logits=True)``: the input size of the model's output layer."""
    for attr in ("classifier", "fc"):
        layer = getattr(model, attr, None)
        if isinstance(layer, nn.Linear):
            return int(layer.in_features)
    raise ModelError(f"{type(model).__name__} has no output layer (classifier / fc) to take an embedding before")


def member_embedding(model: nn.Module, waveform: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` waveform -> ``(B, D)``: the layer before the classifier (the contract of ``pre_logits``)."""
    net = cast(Any, model)
    return cast(torch.Tensor, net.forward_head(net.forward_features(waveform), pre_logits=True))


class TagHead(nn.Module):
    """A base tagger (one network or several, whose embeddings are concatenated in member order) + a head.

    Args:
        n_tags (int or None, optional): Output tags. (Default: ``len(tag_names)``)
        tag_names (sequence of str or None, optional): Your tags, in output order. (Default: ``tag_000``...)
        base (sequence of mapping or None, optional): One :func:`base_spec` per base member, in member order.
            (Default: ``None`` = a freshly initialised Musicnn, the smallest shipped architecture;
            ``focaltag head train`` always passes the trained base it extracted the embeddings with)
        hidden_dim (int, optional): Hidden units of the head; 0 for a linear head. (Default: ``0``)
        drop_rate (float, optional): Dropout in the head (training only). (Default: ``0.0``)

    Example:
        >>> base = create_model("musicnn", n_tags=50)
        >>> model = TagHead(tag_names=["warm-up", "peak"], base=[base_spec(base)]).eval()
        >>> model(torch.zeros(1, model.pretrained_cfg.chunk_samples)).shape
        torch.Size([1, 2])
    """

    def __init__(self, n_tags: int | None = None, *, tag_names: Sequence[str] | None = None,
                 base: Sequence[Mapping[str, Any]] | None = None, hidden_dim: int = 0,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        n_tags, names = _check_tag_names(tag_names, n_tags)
        if base is None:
            base = [{"model_name": "musicnn", "model_args": {}}]
        if isinstance(base, Mapping) or not base:
            raise ModelError("tag_head needs base: a list of one or more base model specs (focaltag.models.head."
                             "base_spec)")
        members = [self._build_member(i, spec) for i, spec in enumerate(base)]
        first = cfg_of(members[0])
        for i, member in enumerate(members[1:], start=1):
            cfg = cfg_of(member)
            if (cfg.sample_rate, cfg.chunk_samples) != (first.sample_rate, first.chunk_samples):
                raise ModelError(f"tag_head: base member {i} reads {cfg.chunk_samples} samples at {cfg.sample_rate} "
                                 f"Hz, member 0 {first.chunk_samples} at {first.sample_rate} Hz; an ensemble base "
                                 "needs one input length")
        self.members = nn.ModuleList(members)
        self.embedding_sizes = [embedding_size(m) for m in members]
        self.num_features = sum(self.embedding_sizes)
        self.head = EmbeddingHead(self.num_features, n_tags, hidden_dim=hidden_dim, drop_rate=drop_rate)
        self.model_name = "tag_head"
        self.model_args: dict[str, Any] = {"n_tags": n_tags, "base": [dict(s) for s in base],
                                           "hidden_dim": int(hidden_dim), "drop_rate": float(drop_rate)}
        self.base_labels = [str(s.get("label", s["model_name"])) for s in base]
        self.pretrained_cfg = dataclasses.replace(first, tag_names=names, n_tags=n_tags)
        self.runtime_facts = _head_facts(members)

    @staticmethod
    def _build_member(index: int, spec: Mapping[str, Any]) -> nn.Module:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("model_name"), str) \
                or not isinstance(spec.get("model_args"), Mapping):
            raise ModelError(f"tag_head: base member {index} must be a mapping with model_name and model_args")
        args = dict(spec["model_args"])
        args.pop("tag_names", None)
        return create_model(spec["model_name"], tag_names=spec.get("tag_names"), **args).eval()

    @property
    def n_tags(self) -> int:
        return self.head.fc.out_features

    def train(self, mode: bool = True) -> TagHead:
        """Only the head trains; the base members stay in eval mode (their BatchNorm statistics are fixed)."""
        super().train(mode)
        self.members.eval()
        return self

    def forward_features(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform -> ``(B, D)``: the base members' embeddings, concatenated in member order."""
        parts = [member_embedding(m, waveform) for m in self.members]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Embeddings -> logits of your tags (``pre_logits``: the input of the output layer)."""
        return cast(torch.Tensor, self.head(x, pre_logits=pre_logits))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` waveform at ``pretrained_cfg.sample_rate`` -> ``(B, n_tags)`` logits (no sigmoid)."""
        return self.forward_head(self.forward_features(waveform))

    def reset_classifier(self, n_tags: int, tag_names: Sequence[str] | None = None) -> None:
        """Replace the output layer with a freshly initialised one for ``n_tags`` tags (the base is kept)."""
        n_tags, names = _check_tag_names(tag_names, n_tags)
        ref = self.head.fc.weight
        self.head.fc = nn.Linear(self.head.fc.in_features, n_tags).to(device=ref.device, dtype=ref.dtype)
        self.model_args["n_tags"] = n_tags
        self.pretrained_cfg = dataclasses.replace(self.pretrained_cfg, n_tags=n_tags, tag_names=names)

    def get_classifier(self) -> nn.Linear:
        """The output layer."""
        return self.head.fc

    def set_output_bias(self, value: float | Sequence[float] | torch.Tensor) -> None:
        self.head.set_output_bias(value)


def _head_facts(members: Sequence[nn.Module]) -> RuntimeFacts:
    """How a head runs in reduced precision: as its base does (the base members' float32-grade layers under bf16,
    bf16 under ``auto`` only where every member's is, the largest re-check margin, onnxruntime float32 where every
    member's is). No int8 recipe: int8 was measured on the base networks alone, not with a head after them; the
    margins are the base's, the head's own bf16 error has not been measured."""
    facts = [runtime_facts(m) for m in members]
    return RuntimeFacts(
        fp32_modules=tuple(f"members.{i}.{name}" for i, f in enumerate(facts) for name in f.fp32_modules),
        bf16_on_cpu=all(f.bf16_on_cpu for f in facts),
        bf16_recheck_margin=max(f.bf16_recheck_margin for f in facts),
        onnx_fp32_without_bf16=all(f.onnx_fp32_without_bf16 for f in facts))


@register_model
def tag_head(**kwargs: Any) -> TagHead:
    """Your own tags: a base model's embedding (one network or an ensemble) followed by a small trained head."""
    return TagHead(**kwargs)


# --------------------------------------------------------------------------------------------- head folders


def head_folder_of(path: str | os.PathLike[str]) -> Path | None:
    """The head folder ``path`` is (or whose ``best.pt`` it is), else None."""
    p = Path(path)
    folder = p if p.is_dir() else p.parent if p.name == CHECKPOINT_FILE else None
    return folder if folder is not None and is_head_folder(folder) else None


def is_head_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``focaltag head train`` (a card with the head format marker)."""
    folder = Path(path)
    card = folder / CARD_FILE
    if not (card.is_file() and (folder / CHECKPOINT_FILE).is_file()):
        return False
    try:
        return json.loads(card.read_text(encoding="utf-8")).get("format") == HEAD_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The model card of a head folder (or of the folder of its ``best.pt``)."""
    folder = head_folder_of(path)
    if folder is None:
        raise CheckpointError(f"{path} is not a head folder (no {CARD_FILE} with \"format\": \"{HEAD_FORMAT}\" "
                              f"beside {CHECKPOINT_FILE}); train one with 'focaltag head train'")
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{folder / CARD_FILE}: not valid JSON ({err})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{folder / CARD_FILE}: expected a JSON object")
    return card


def head_thresholds(path: str | os.PathLike[str]) -> dict[str, float] | None:
    """The head's own decision thresholds (``{tag: threshold}``, the rule is ``probability > threshold``) when
    ``path`` is a head folder or its ``best.pt``; None for anything else."""
    if head_folder_of(path) is None:
        return None
    thresholds = read_card(path).get("thresholds")
    if not isinstance(thresholds, Mapping) or not thresholds:
        return None
    try:
        return {str(t): float(v) for t, v in thresholds.items()}
    except (TypeError, ValueError):
        raise CheckpointError(f"{path}: the card's thresholds are not numbers") from None


def save_head(folder: str | os.PathLike[str], model: TagHead, card: Mapping[str, Any]) -> Path:
    """Write a head folder: ``best.pt`` (atomic, the project's checkpoint format), ``thresholds.tsv`` and
    ``card.json``. The card is removed first and written last, so a folder with a card is always complete."""
    from focaltag._io import write_json, write_text
    from focaltag.models._checkpoint import save_model

    if card.get("format") != HEAD_FORMAT:
        raise ModelError(f"a head card needs \"format\": \"{HEAD_FORMAT}\"")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CARD_FILE).unlink(missing_ok=True)
    save_model(model, folder / CHECKPOINT_FILE)
    thresholds = card.get("thresholds") or {}
    write_text(folder / THRESHOLDS_FILE, "".join(f"{t}\t{float(v)!r}\n" for t, v in thresholds.items()))
    write_json(folder / CARD_FILE, dict(card))
    return folder


def is_head_source(source: Any) -> bool:
    """Whether a resolved member (:class:`~focaltag.models.resolve.MemberSource`: a path or a loaded model) is a
    head of ``focaltag head train``."""
    path = getattr(source, "path", None)
    if path is not None:
        return head_folder_of(path) is not None
    return getattr(getattr(source, "model", None), "model_name", None) == "tag_head"


def heads_dir() -> Path:
    """Where ``focaltag models import NAME HEAD_FOLDER`` keeps imported heads: ``<cache>/heads``."""
    from focaltag._cache import cache_root

    return cache_root() / "heads"


def imported_head(name: str) -> Path | None:
    """The cached folder of a head imported as ``name``, else None (what makes ``--model NAME`` work)."""
    if not name or os.sep in name or name.startswith("."):
        return None
    folder = heads_dir() / name
    return folder if is_head_folder(folder) else None


def import_head(name: str, source: str | os.PathLike[str]) -> Path:
    """Copy the head folder ``source`` (model, card, thresholds; not its work folder) into the cache as ``name``.

    The copy is checked by loading it before it replaces an earlier import of the same name.
    """
    from focaltag.models.catalogue import catalogue

    if name in catalogue():
        raise ModelError(f"models import: {name!r} is a catalogue model; import a head under another name")
    if not name or os.sep in name or name.startswith(".") or (os.altsep and os.altsep in name):
        raise ModelError(f"models import: {name!r} is not a usable name; use letters, digits, '-' and '_'")
    folder = head_folder_of(source)
    if folder is None:
        raise ModelError(f"models import: {source} is not a head folder (written by 'focaltag head train')")
    target = heads_dir() / name
    staging = heads_dir() / f".{name}.importing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for file in (CHECKPOINT_FILE, THRESHOLDS_FILE, CARD_FILE):
            if (folder / file).is_file():
                shutil.copyfile(folder / file, staging / file)
        from focaltag.models._checkpoint import load_model

        load_model(staging)  # a damaged copy is never installed
        old = heads_dir() / f".{name}.replaced-{os.getpid()}"
        if target.exists():
            os.replace(target, old)
        os.replace(staging, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

"""What inference needs to know about an architecture beyond its weights: how it runs fast without changing its
answers (:class:`RuntimeFacts`), and which of its layers is the embedding (:func:`logits_and_embedding`).

These are facts of the architecture, measured once and kept with it, as timm keeps its ``pretrained_cfg``: every
architecture class carries a ``runtime_facts`` class attribute, and inference reads it through
:func:`runtime_facts` instead of tables keyed by model names. The measurements behind each value are in the
README (bf16 design, int8 accuracy and speed rows) and ``bench/tag.py``.

The embedding of a chunk is the layer before the classifier, timm's ``forward_head(..., pre_logits=True)``: the
paper ResNet's hidden layer after BatchNorm and ReLU, FCN's and CRNN's pooled features, Musicnn's dense layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from focaltag.errors import ConfigError, ModelError

if TYPE_CHECKING:
    import torch

__all__ = ["RuntimeFacts", "runtime_facts", "logits_and_embedding", "embedding_size", "DEFAULT_FACTS"]


@dataclass(frozen=True)
class RuntimeFacts:
    """How an architecture runs in reduced precision and how far such a run may be from float32.

    Attributes:
        fp32_modules: submodules computed to float32 grade under bf16: the layers that read the log-mel
            spectrogram. Rounding the spectrogram itself to 8 significant bits is most of bf16's error.
        bf16_on_cpu: whether ``precision="auto"`` runs bf16 on a CPU with native bf16. False where bf16 and its
            close-call re-checks measured no faster than float32 (Musicnn's small matrices).
        bf16_recheck_margin: the probability gap under which a bf16 result is recomputed in float32: about twice
            bf16's largest measured track-level error, so only genuine near-ties pay for a re-check.
        int8_recipe: whether a static int8 recipe (onnxruntime QDQ) exists for the architecture.
        int8_auto: whether ``auto`` picks int8 on CPUs without native bf16. Off where int8 put nearly every track
            inside the re-check margin or gained nothing (a full-resolution first convolution is most of FCN's
            and CRNN's compute).
        int8_recheck_margin: as ``bf16_recheck_margin``, for int8.
        onnx_fp32_without_bf16: whether float32 runs through onnxruntime rather than eager torch on a CPU without
            native bf16 (where int8 is not picked): its kernels and its arena allocator beat eager torch there.
    """

    fp32_modules: tuple[str, ...] = ()
    bf16_on_cpu: bool = True
    bf16_recheck_margin: float = 0.005
    int8_recipe: bool = False
    int8_auto: bool = False
    int8_recheck_margin: float = 0.0
    onnx_fp32_without_bf16: bool = False

    def __post_init__(self) -> None:
        for name in ("bf16_recheck_margin", "int8_recheck_margin"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"RuntimeFacts.{name} must be in [0, 1), got {value}")
        if self.int8_auto and not self.int8_recipe:
            raise ConfigError("RuntimeFacts: int8_auto needs int8_recipe")
        if self.int8_recipe and not self.int8_recheck_margin > 0:
            raise ConfigError("RuntimeFacts: an int8 recipe needs an int8_recheck_margin > 0")

    def recheck_margin(self, precision: str) -> float:
        """The re-check margin a member running in ``precision`` needs (0 for float32)."""
        if precision == "bf16":
            return self.bf16_recheck_margin
        if precision == "int8":
            return self.int8_recheck_margin
        return 0.0


DEFAULT_FACTS = RuntimeFacts()
"""For a model class that declares none: bf16 everywhere under ``auto`` where it is native, no float32 islands,
no int8 recipe."""


def runtime_facts(model: Any) -> RuntimeFacts:
    """The :class:`RuntimeFacts` of ``model``'s architecture (:data:`DEFAULT_FACTS` when it declares none); a model
    whose facts depend on what it wraps (a head on a base model) carries them on the instance."""
    facts = getattr(model, "runtime_facts", None)
    return facts if isinstance(facts, RuntimeFacts) else DEFAULT_FACTS


def logits_and_embedding(model: Any, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and the embedding (the layer before the classifier) of a waveform batch, in one forward pass.

    The same operations as ``model(waveform)`` split at the classifier, so the logits are bit-identical to a
    plain forward. A model with its own ``logits_and_embedding`` (an ensemble) is asked directly.
    """
    own = getattr(model, "logits_and_embedding", None)
    if callable(own):
        logits, embedding = own(waveform)
        return logits, embedding
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier) or not hasattr(model, "forward_head"):
        raise ModelError(f"{type(model).__name__} has no embedding (it needs forward_features, forward_head and "
                         "get_classifier); tag without embeddings")
    embedding = model.forward_head(model.forward_features(waveform), pre_logits=True)
    return get_classifier()(embedding), embedding


def embedding_size(model: Any) -> int:
    """The length of ``model``'s embedding vector (the classifier's input size; an ensemble's members summed)."""
    own = getattr(model, "embedding_size", None)
    if isinstance(own, int):
        return own
    get_classifier = getattr(model, "get_classifier", None)
    if not callable(get_classifier):
        raise ModelError(f"{type(model).__name__} has no embedding (no get_classifier)")
    return int(get_classifier().in_features)

"""The predictor: loaded members with their precision plans, the ensemble mean, and the float32 re-check rule.

A :class:`Predictor` maps a batch of waveform chunks to per-chunk probabilities and, when asked, per-chunk
embeddings (the members' layers before the classifier, concatenated in member order). It knows nothing of files,
tracks or batching across files: that is the scheduler's job (:class:`focaltag.inference.tagger.Tagger`).

It is built once from a :class:`~focaltag.models.resolve.ResolvedModel`: the models are resolved before, never
here, and several taggers (serve's per-request variants, its ensemble of every ``-m``) share one predictor's
loaded networks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from focaltag.errors import ConfigError, DataError, ModelError
from focaltag.inference.members import Member, check_members, load_members
from focaltag.inference.options import InferenceOptions
from focaltag.inference.precision import is_reduced
from focaltag.models.ensemble import mean_probabilities
from focaltag.models.resolve import ResolvedModel, combine

__all__ = ["Predictor", "close_call"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Loaded:
    members: tuple[Member, ...]
    weights: np.ndarray


class Predictor:
    """Loaded networks of one resolved model, run together: chunks -> probabilities (and embeddings).

    Build it with :meth:`load` (or :meth:`combine` to average predictors that are loaded already).
    """

    def __init__(self, resolved: ResolvedModel, members: Sequence[Member], load_key: tuple[str, str, str, str]):
        if not members:
            raise ModelError("a predictor needs at least one member")
        check_members(members)
        self.resolved = resolved
        self.members: tuple[Member, ...] = tuple(members)
        self.weights = np.asarray(resolved.weights, dtype=np.float64)
        self.load_key = load_key
        first = self.members[0]
        self.tag_names: tuple[str, ...] = first.tag_names
        self.sample_rate, self.chunk_samples = first.sample_rate, first.chunk_samples

    @classmethod
    def load(cls, resolved: ResolvedModel, options: InferenceOptions | None = None) -> Predictor:
        """Load ``resolved``'s members for ``options``' runtime, device, memory layout and precision."""
        options = options or InferenceOptions()
        members = load_members(resolved, runtime=options.runtime, device=options.device,
                               optimize=options.optimize, precision=options.precision)
        return cls(resolved, members, options.load_key)

    @classmethod
    def combine(cls, predictors: Sequence[Predictor], label: str | None = None) -> Predictor:
        """The mean of several loaded predictors as one, sharing their networks (nothing is loaded again)."""
        if not predictors:
            raise ConfigError("combine needs at least one predictor")
        keys = {p.load_key for p in predictors}
        if len(keys) > 1:
            raise ConfigError("predictors loaded with different runtime, device or precision cannot be averaged")
        resolved = combine([p.resolved for p in predictors], label)
        return cls(resolved, [m for p in predictors for m in p.members], predictors[0].load_key)

    # -- facts ---------------------------------------------------------------------------------------------
    @property
    def label(self) -> str:
        """What results report as ``"model"``: the catalogue name, else the file or folder name(s)."""
        return self.resolved.label

    @property
    def member_precisions(self) -> tuple[str, ...]:
        return tuple(m.plan.precision for m in self.members)

    @property
    def precision(self) -> str:
        """The members' precisions as one label (``"bf16"``, ``"fp32"``, ``"bf16+fp32"``): for logs and results."""
        return "+".join(sorted(set(self.member_precisions)))

    @property
    def engine(self) -> str:
        """What runs the members as one label (``"torch"``, ``"onnxruntime"``, ``"onnxruntime+torch"``)."""
        return "+".join(sorted({m.plan.engine for m in self.members}))

    @property
    def reduced(self) -> bool:
        """Whether any member approximates float32 (bf16, int8), so close calls are re-checked in float32."""
        return any(is_reduced(p) for p in self.member_precisions)

    @property
    def recheck_margin(self) -> float:
        """The largest re-check margin the members' plans need (0 when every member runs float32)."""
        return float(max((m.plan.recheck_margin for m in self.members), default=0.0))

    @property
    def on_cpu(self) -> bool:
        return all(str(getattr(m, "device", "cpu")).startswith("cpu") for m in self.members)

    @property
    def embedding_size(self) -> int | None:
        """Length of an embedding (members concatenated), or None when a member cannot give one."""
        sizes = [m.embedding_size for m in self.members]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def check_embeddings(self) -> None:
        """Raise ModelError (one line) unless every member can give embeddings."""
        for m in self.members:
            if m.embedding_size is None:
                raise ModelError(f"{m.name} gives no embeddings (an ONNX file exported before focaltag 0.3); "
                                 "export it again with 'focaltag export', or tag without --embeddings")

    # -- the network ---------------------------------------------------------------------------------------
    def run(self, chunks: np.ndarray, *, precision: str | None = None,
            embeddings: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Ensemble probabilities ``(n, n_tags)`` float64 of one batch of chunks ``(n, chunk_samples)``, and its
        embeddings ``(n, D)`` float32 when asked. ``precision="fp32"`` runs reduced-precision members in float32
        for this call (the close-call re-check)."""
        chunks = np.asarray(chunks, dtype=np.float32)
        if chunks.ndim != 2 or chunks.shape[1] != self.chunk_samples:
            raise DataError(f"chunks must have shape (n, {self.chunk_samples}), got {chunks.shape}")
        outputs = [m.run(chunks, embeddings=embeddings) if precision is None or m.plan.precision == precision
                   else m.run(chunks, precision=precision, embeddings=embeddings) for m in self.members]
        probabilities = np.asarray(mean_probabilities((p for p, _ in outputs), self.weights), dtype=np.float64)
        if not embeddings:
            return probabilities, None
        parts = [e for _, e in outputs if e is not None]
        if len(parts) != len(outputs):
            self.check_embeddings()
        return probabilities, np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def close_call(track: np.ndarray, *, margin: float, top_k: int, thresholds: np.ndarray | None) -> bool:
    """True when a reduced-precision error below ``margin`` could change the top-k order or a decision."""
    if margin <= 0:
        return False
    if top_k > 0 and track.size > 1:
        top = np.sort(track)[::-1][: top_k + 1]
        if float(np.min(top[:-1] - top[1:])) < margin:
            return True
    return thresholds is not None and bool(np.any(np.abs(track - thresholds) < margin))

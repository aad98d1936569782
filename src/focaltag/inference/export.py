"""``focaltag export``: a model, checkpoint, run folder or ensemble folder -> one ONNX file.

The graph and the onnxruntime member live in ``focaltag.inference.onnx_model``; this module only resolves the
model specs with the one resolver (:func:`focaltag.models.resolve.resolve_model`) and hands the torch models over. It checks the ONNX extra before anything
imports ``onnx``, so a missing extra is one line naming ``pip install 'focaltag[onnx]'``.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from focaltag.inference.onnx_model import (
    INSTALL_HINT,
    ONNX_OPSET,
    ExportInfo,
    OnnxMember,
    cached_onnx,
    onnx_cache_dir,
    require_onnx,
    write_onnx,
)

if TYPE_CHECKING:
    from focaltag.models.resolve import ModelSpecs

__all__ = ["export_onnx", "OnnxMember", "require_onnx", "cached_onnx", "onnx_cache_dir", "ONNX_OPSET",
           "INSTALL_HINT"]


def export_onnx(model_or_models: ModelSpecs, path: str | os.PathLike[str], *, check: bool = True,
                atol: float = 1e-4, seed: int = 0) -> ExportInfo:
    """Export a model, checkpoint path or ensemble to ``path``; returns ``{"path", "n_tags", "max_abs_diff"}``.

    With ``check`` the ONNX output on a random batch of 3 chunks is compared to torch and a difference above
    ``atol`` raises ModelError (the file is not kept).
    """
    require_onnx(export=True)
    from focaltag.inference.members import TorchMember, load_members
    from focaltag.models.meta import ModelMeta
    from focaltag.models.resolve import resolve_model

    resolved = resolve_model(model_or_models)
    members = load_members(resolved, runtime="torch", precision="fp32")
    torch_members = [m for m in members if isinstance(m, TorchMember)]
    meta = ModelMeta(members[0].tag_names, members[0].sample_rate, members[0].chunk_samples)
    return write_onnx([m.model for m in torch_members], resolved.weights, meta, path,
                      check=check, atol=atol, seed=seed)

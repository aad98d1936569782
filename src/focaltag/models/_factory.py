"""``create_model``: build a registered architecture by name with validated keyword arguments."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from torch import nn

from focaltag.errors import ModelError
from focaltag.models._registry import model_entrypoint

__all__ = ["create_model"]


def create_model(
    name: str = "short_chunk_resnet",
    *,
    n_tags: int | None = None,
    variant: str | None = None,
    width: int | None = None,
    tag_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the model registered as ``name``; keyword arguments set to ``None`` take the model's default.

    Args:
        name (str, optional): A name from :func:`list_models`. (Default: ``"short_chunk_resnet"``)
        n_tags (int or None, optional): Output tags. (Default: ``len(tag_names)``, else 56)
        variant (str or None, optional): ``"paper"`` (4.6 s chunks) or ``"won2020"`` (3.69 s).
            (Default: the model's, ``"paper"`` for ``short_chunk_resnet``)
        width (int or None, optional): Channels of the first block. (Default: ``128``)
        tag_names (sequence of str or None, optional): Output tag names, stored in ``model.pretrained_cfg``.
            (Default: the 56 MTG-Jamendo mood/theme tags for 56 outputs)
        **kwargs: Further constructor arguments (``hidden_dim``, ``sample_rate``, ``n_mels``, ``drop_rate``).

    Returns:
        nn.Module: ``forward(waveform[B, T]) -> logits[B, n_tags]``, with ``model.pretrained_cfg``.

    Raises:
        ModelError: unknown name (with close matches) or an argument the model does not take.

    Example:
        >>> model = create_model("short_chunk_resnet", n_tags=10, width=16)
        >>> model.pretrained_cfg.chunk_samples
        73600
    """
    entry = model_entrypoint(name)
    args = dict(n_tags=n_tags, variant=variant, width=width, tag_names=tag_names, **kwargs)
    args = {k: v for k, v in args.items() if v is not None}
    _check_kwargs(name, entry, args)
    model = entry(**args)
    if not hasattr(model, "model_name"):
        model.model_name = name
    return model


def _check_kwargs(name: str, entry: Any, args: dict[str, Any]) -> None:
    """Reject keyword arguments the model's constructor does not accept, naming the accepted ones."""
    target = _constructor_of(entry)
    if target is None:
        return
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p, v in params.items() if v.kind is not inspect.Parameter.VAR_POSITIONAL and p != "self"]
    unknown = sorted(set(args) - set(accepted))
    if unknown:
        raise ModelError(f"model {name!r} got unknown argument(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(accepted)}")


def _constructor_of(entry: Any) -> Any:
    """The class an entrypoint builds, read from its return annotation (``-> ShortChunkResNet``)."""
    try:
        ret = inspect.signature(entry, eval_str=True).return_annotation
    except (NameError, TypeError):
        return None
    return ret.__init__ if inspect.isclass(ret) else None

"""Taggram: how a track's tag probabilities change over time (``focaltag tag --taggram OUT.png``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from focaltag.data.tags import short_tag
from focaltag.errors import ConfigError
from focaltag.inference.tagger import TagResult

__all__ = ["plot_taggram"]


def _mmss(seconds: float, _pos: object = None) -> str:
    minutes, secs = divmod(int(round(max(seconds, 0.0))), 60)
    return f"{minutes}:{secs:02d}"


def _tick_step(duration: float) -> float:
    """A round tick spacing (seconds) giving at most ~10 ticks."""
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration / step <= 10:
            return float(step)
    return 7200.0


def _edges(centers: np.ndarray, duration: float) -> np.ndarray:
    """Column edges halfway between chunk centres, clipped to the track."""
    if len(centers) == 1:
        return np.array([0.0, max(duration, 1e-3)])
    mids = (centers[1:] + centers[:-1]) / 2
    first = max(0.0, centers[0] - (mids[0] - centers[0]))
    last = min(max(duration, centers[-1]), centers[-1] + (centers[-1] - mids[-1]))
    return np.concatenate([[first], mids, [last]])


def plot_taggram(result: TagResult, path: str | os.PathLike[str], *, n_tags: int = 20,
                 title: str | None = None) -> Path:
    """Write a PNG: the ``n_tags`` most probable tags (rows) over time (chunk centres), plus their track-level
    probabilities as bars on the right. Returns the path written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, MaxNLocator, MultipleLocator

    from focaltag._io import atomic_write

    if not isinstance(result, TagResult):
        raise ConfigError(f"a taggram needs a tagged track, got {type(result).__name__}")
    if n_tags < 1:
        raise ConfigError(f"n_tags must be >= 1, got {n_tags}")
    probs = np.asarray(result.chunk_probabilities, dtype=np.float64)
    track = result.as_array()
    order = np.argsort(-track, kind="stable")[: min(n_tags, len(track))]
    centers = np.asarray(result.chunk_times, dtype=np.float64) + result.chunk_seconds / 2
    centers = np.minimum(centers, max(result.duration, 1e-3))
    sort = np.argsort(centers, kind="stable")
    centers, grid = centers[sort], probs[sort][:, order].T  # (tags, time)
    names = [short_tag(result.tag_names[j]) for j in order]

    height = 1.2 + 0.28 * len(order)
    fig, (ax, bar_ax) = plt.subplots(1, 2, figsize=(11, height), sharey=True,
                                     gridspec_kw={"width_ratios": [5, 1], "wspace": 0.08})
    # colours span the plotted range (the colour bar gives the values), so changes over time stay visible
    vmin, vmax = float(grid.min()), float(grid.max())
    if vmax - vmin < 1e-6:
        vmin, vmax = max(vmin - 0.05, 0.0), min(vmax + 0.05, 1.0)
    mesh = ax.pcolormesh(_edges(centers, result.duration), np.arange(len(order) + 1) - 0.5, grid,
                         cmap="magma", vmin=vmin, vmax=vmax, shading="flat")
    ax.set_yticks(np.arange(len(order)), names)
    ax.set_ylim(len(order) - 0.5, -0.5)  # most probable tag on top
    ax.xaxis.set_major_formatter(FuncFormatter(_mmss))
    ax.xaxis.set_major_locator(MultipleLocator(_tick_step(result.duration)))
    hop = f", hop {np.median(np.diff(centers)):.1f} s" if len(centers) > 1 else ""
    ax.set_xlabel(f"time (m:ss) — {len(centers)} chunk{'s' if len(centers) > 1 else ''} of "
                  f"{result.chunk_seconds:.1f} s{hop}")
    ax.set_title(title or f"{Path(result.file).name} ({_mmss(result.duration)})", loc="left", fontsize=11)
    bar_ax.barh(np.arange(len(order)), track[order], color="#b5367a", height=0.7)
    for y, value in enumerate(track[order]):
        bar_ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    bar_ax.set_xlim(0, min(1.0, max(float(track[order].max()) * 1.35, 0.05)))
    bar_ax.xaxis.set_major_locator(MaxNLocator(nbins=2, prune="lower"))  # no "0" beside the last time tick
    bar_ax.set_xlabel("track")
    bar_ax.tick_params(axis="y", left=False)
    for side in ("top", "right"):
        bar_ax.spines[side].set_visible(False)
    cbar = fig.colorbar(mesh, ax=[ax, bar_ax], fraction=0.025, pad=0.02)
    cbar.set_label("probability")
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path

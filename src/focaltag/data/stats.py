"""Dataset statistics (tag counts, imbalance, head/middle/tail groups, co-occurrence) and the tag-distribution plot."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.data.groups import DEFAULT_GROUP_THRESHOLDS, frequency_groups
from focaltag.data.metadata import TagVocabulary, TrackRecord, tag_counts
from focaltag.data.tags import short_tag
from focaltag.errors import DataError

__all__ = ["GROUP_THRESHOLDS", "dataset_stats", "tag_groups", "cooccurrence", "plot_tag_distribution"]

logger = logging.getLogger(__name__)

# The paper's groups (head / middle / tail by training count) are defined once, in focaltag.data.groups.
GROUP_THRESHOLDS: tuple[int, int] = DEFAULT_GROUP_THRESHOLDS


def tag_groups(counts: dict[str, int], thresholds: tuple[int, int] = GROUP_THRESHOLDS) -> dict[str, list[str]]:
    """Head, middle and tail tags (``focaltag.data.groups``'s rule), each sorted by count descending."""
    order = sorted(counts, key=lambda t: (-counts[t], t))
    return frequency_groups([counts[t] for t in order], order, thresholds=thresholds)


def cooccurrence(y: np.ndarray, tags: Sequence[str], *, top: int = 10) -> tuple[list[dict[str, Any]],
                                                                                 list[dict[str, Any]]]:
    """The ``top`` tag pairs by co-occurrence count and by Pearson correlation of the multi-hot columns."""
    y = np.asarray(y, dtype=np.float64)
    n_tags = y.shape[1]
    if n_tags < 2 or y.shape[0] < 2:
        return [], []
    co = y.T @ y
    centered = y - y.mean(axis=0)
    std = np.sqrt((centered**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centered.T @ centered) / np.outer(std, std)
    iu, ju = np.triu_indices(n_tags, k=1)

    def pair(i: int, j: int) -> dict[str, Any]:
        r = corr[i, j]
        return {"tags": [tags[i], tags[j]], "count": int(co[i, j]),
                "correlation": None if not np.isfinite(r) else round(float(r), 4)}

    counts = co[iu, ju]
    by_count = np.lexsort((np.nan_to_num(-corr[iu, ju], nan=0.0), -counts))[:top]
    top_count = [pair(int(iu[k]), int(ju[k])) for k in by_count if counts[k] > 0]
    by_corr = np.argsort(np.nan_to_num(-corr[iu, ju], nan=np.inf), kind="stable")[:top]
    top_corr = [pair(int(iu[k]), int(ju[k])) for k in by_corr]
    return top_count, top_corr


def _summary(values: np.ndarray, digits: int = 2) -> dict[str, float] | None:
    if values.size == 0:
        return None
    return {"mean": round(float(values.mean()), digits), "median": round(float(np.median(values)), digits),
            "min": round(float(values.min()), digits), "max": round(float(values.max()), digits)}


def dataset_stats(tracks: Sequence[TrackRecord], vocab: TagVocabulary | None = None, *,
                  group_thresholds: tuple[int, int] = GROUP_THRESHOLDS, top: int = 10,
                  sources: dict[str, Sequence[TrackRecord]] | None = None) -> dict[str, Any]:
    """Statistics of a track list as one JSON-ready dict (counts keyed by full tag name).

    ``vocab`` defaults to every tag that occurs; tags outside it are ignored and listed under ``ignored_tags``.
    ``sources`` (label -> tracks, together equal to ``tracks``) adds per-source tag counts for stacked plots.
    """
    if not tracks:
        raise DataError("no tracks to describe; the metadata lists no tracks")
    vocab = vocab if vocab is not None else TagVocabulary.from_tracks(tracks)
    y = vocab.encode(tracks, unknown="ignore", dtype=np.int8)
    counts = y.sum(axis=0, dtype=np.int64)
    count_map = {t: int(c) for t, c in zip(vocab.tags, counts, strict=True)}
    per_track = y.sum(axis=1, dtype=np.int64)
    durations = np.array([r.duration for r in tracks if r.duration is not None], dtype=np.float64)
    ignored = sorted({t for r in tracks for t in r.tags} - set(vocab.tags))
    if ignored:
        logger.warning("%d tag(s) outside the %d-tag vocabulary are ignored: %s", len(ignored), len(vocab),
                       ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
    order = sorted(count_map, key=lambda t: (-count_map[t], t))
    most, least = order[0], order[-1]
    imbalance = count_map[most] / count_map[least] if count_map[least] > 0 else None
    groups = tag_groups(count_map, group_thresholds)
    top_count, top_corr = cooccurrence(y, vocab.tags, top=top)
    duration = _summary(durations)
    if duration is not None:
        duration["n_tracks"] = int(durations.size)
        duration["total_hours"] = round(float(durations.sum()) / 3600.0, 2)
    stats: dict[str, Any] = {
        "n_tracks": len(tracks),
        "n_tags": len(vocab),
        "n_untagged": int((per_track == 0).sum()),
        "tags_per_track": _summary(per_track.astype(np.float64)),
        "duration": duration,
        "most_frequent": {"tag": most, "count": count_map[most]},
        "least_frequent": {"tag": least, "count": count_map[least]},
        "imbalance_factor": None if imbalance is None else round(imbalance, 4),
        "group_thresholds": {"head_above": group_thresholds[0], "tail_at_most": group_thresholds[1]},
        "groups": groups,
        "group_sizes": {k: len(v) for k, v in groups.items()},
        "tag_counts": {t: count_map[t] for t in order},
        "top_cooccurrence": top_count,
        "top_correlation": top_corr,
        "ignored_tags": ignored,
    }
    if imbalance is None:
        logger.warning("tag %s has no tracks; the imbalance factor is undefined", least)
    if sources:
        stats["sources"] = {label: {"n_tracks": len(recs),
                                    "tag_counts": dict(zip(vocab.tags, map(int, tag_counts(recs, vocab)),
                                                           strict=True))}
                            for label, recs in sources.items()}
    return stats


def plot_tag_distribution(stats: dict[str, Any], out: str | os.PathLike[str], *, title: str | None = None,
                          dpi: int = 150) -> Path:
    """Bar plot of tag counts sorted descending (paper Fig. 1); several sources are stacked (Fig. 2)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from focaltag._io import atomic_write

    out = Path(out)
    if out.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise DataError(f"--plot must end in .png, .pdf or .svg, got {out.name!r}")
    sources = stats.get("sources") or {"tracks": {"tag_counts": stats["tag_counts"]}}
    first = next(iter(sources.values()))["tag_counts"]
    # The order of the first source (Fig. 2 keeps Fig. 1's order); ties by name for a stable picture.
    order = sorted(first, key=lambda t: (-first[t], t))
    x = np.arange(len(order))
    hi, lo = stats["group_thresholds"]["head_above"], stats["group_thresholds"]["tail_at_most"]
    width = max(8.0, 0.2 * len(order) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 4.8), layout="constrained")
    bottom = np.zeros(len(order))
    colors = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap
    for k, (label, src) in enumerate(sources.items()):
        values = np.array([src["tag_counts"].get(t, 0) for t in order], dtype=float)
        ax.bar(x, values, bottom=bottom, width=0.8, color=colors[k % len(colors)],
               label=f"{label} ({src['n_tracks']:,} tracks)" if "n_tracks" in src else label)
        bottom += values
    for level, name in ((hi, f"head > {hi}"), (lo, f"tail \u2264 {lo}")):
        ax.axhline(level, color="0.35", linestyle="--", linewidth=0.8)
        ax.text(1.003, level, name, transform=ax.get_yaxis_transform(), va="center", ha="left", fontsize=8,
                color="0.25")
    ax.set_xticks(x, [short_tag(t) for t in order], rotation=90, fontsize=8)
    ax.set_xlim(-0.7, len(order) - 0.3)
    ax.set_ylabel("number of tracks")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    if title is None:
        imb = stats.get("imbalance_factor")
        title = (f"Tag distribution: {stats['n_tracks']:,} tracks, {stats['n_tags']} tags"
                 + (f", imbalance factor {imb:.1f}" if imb else ""))
    ax.set_title(title, fontsize=11)
    if len(sources) > 1:
        ax.legend(loc="upper right", fontsize=9, frameon=False, bbox_to_anchor=(1.0, 0.92))
    fmt = out.suffix.lower().lstrip(".")
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format=fmt, dpi=dpi)
    plt.close(fig)
    logger.info("wrote %s", out)
    return out

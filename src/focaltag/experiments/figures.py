"""Report figures (matplotlib, Agg, PNG): tag distribution, per-tag PR-AUC, validation curves, PR curves."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from focaltag.data.groups import GROUP_NAMES, group_labels, middle_range
from focaltag.data.tags import short_tag

__all__ = [
    "GROUP_COLORS",
    "tag_groups",
    "plot_training_distribution",
    "plot_per_tag_pr_auc",
    "plot_validation_curves",
    "plot_group_pr_curves",
    "read_metrics_jsonl",
]

log = logging.getLogger(__name__)

GROUP_COLORS = {"head": "#1f77b4", "middle": "#ff7f0e", "tail": "#2ca02c"}
GROUPS = GROUP_NAMES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def tag_groups(counts: Sequence[int] | np.ndarray, thresholds: tuple[int, int]) -> list[str]:
    """head / middle / tail for each count, by ``focaltag.data.groups``'s rule (the paper's Table II)."""
    return group_labels(counts, thresholds)


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def _group_legend(ax: Any, groups: Sequence[str], thresholds: tuple[int, int], **kwargs: Any) -> None:
    from matplotlib.patches import Patch

    head, tail = thresholds
    text = {"head": f"head (> {head})", "middle": f"middle ({middle_range(head, tail)})", "tail": f"tail (<= {tail})"}
    handles = [Patch(color=GROUP_COLORS[g], label=f"{text[g]}: {sum(x == g for x in groups)} tags")
               for g in GROUPS]
    ax.legend(handles=handles, **kwargs)


def plot_training_distribution(distributions: Mapping[str, np.ndarray], tag_names: Sequence[str],
                               thresholds: tuple[int, int], path: Path, *, note: str = "") -> Path:
    """Fig. 1/2 style: training tracks per tag, several training sets stacked.

    Drawn by ``focaltag.data.stats.plot_tag_distribution`` (the same picture as ``focaltag data stats
    --plot``); this only turns the report's count arrays into the statistics it reads.
    """
    from focaltag.data.stats import plot_tag_distribution

    sources = {name: {"tag_counts": {t: int(c) for t, c in zip(tag_names, np.asarray(counts), strict=True)}}
               for name, counts in distributions.items()}
    total = np.sum([np.asarray(c) for c in distributions.values()], axis=0)
    nz = total[total > 0]
    imbalance = f", imbalance factor {nz.max() / nz.min():.1f}" if nz.size else ""
    stats = {"sources": sources, "group_thresholds": {"head_above": int(thresholds[0]),
                                                      "tail_at_most": int(thresholds[1])}}
    title = f"Training tracks per tag ({len(tag_names)} tags{imbalance})" + (f"\n{note}" if note else "")
    return plot_tag_distribution(stats, path, title=title, dpi=110)


def plot_per_tag_pr_auc(per_tag: Mapping[str, np.ndarray], tag_names: Sequence[str], counts: np.ndarray | None,
                        thresholds: tuple[int, int], path: Path, *, title: str = "", note: str = "") -> Path:
    """One bar panel per system: PR-AUC of every tag (most to least frequent), coloured head/middle/tail."""
    plt = _pyplot()
    systems = list(per_tag)
    n = len(tag_names)
    order = np.argsort(-np.asarray(counts), kind="stable") if counts is not None else np.arange(n)
    groups = tag_groups(np.asarray(counts)[order], thresholds) if counts is not None else ["middle"] * n
    colors = [GROUP_COLORS[g] for g in groups]
    top = max(float(np.nanmax(np.asarray(v))) for v in per_tag.values()) if per_tag else 1.0
    fig, axes = plt.subplots(len(systems), 1, figsize=(max(10.0, 0.22 * n + 2), 2.3 * len(systems) + 1.6),
                             sharex=True, squeeze=False)
    for ax, name in zip(axes[:, 0], systems, strict=True):
        values = np.asarray(per_tag[name], dtype=float)[order]
        ax.bar(range(n), np.nan_to_num(values), color=colors, width=0.8)
        ax.set_ylim(0, min(1.0, top * 1.1 + 0.02))
        ax.set_ylabel("PR-AUC")
        ax.set_title(f"{name}  (macro PR-AUC {np.nanmean(values):.3f})", loc="left", fontsize=10,
                     fontweight="bold")
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1, 0]
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_xticks(range(n))
    ax.set_xticklabels([short_tag(tag_names[i]) for i in order], rotation=90, fontsize=8)
    if counts is not None:
        _group_legend(axes[0, 0], groups, thresholds, loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8,
                      ncol=3, frameon=False)
    head = title or "Per-tag PR-AUC (tags from most to least frequent in training)"
    fig.suptitle(head + (f"\n{note}" if note else ""), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def read_metrics_jsonl(path: Path) -> list[dict[str, Any]]:
    """Epoch records of a training run's metrics.jsonl (unparseable lines are skipped with a debug log)."""
    rows: list[dict[str, Any]] = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            log.debug("skipping bad line in %s", path)
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _curve_keys(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    keys: list[str] = []
    for row in rows:
        for k, v in row.items():
            if k in keys or k in ("epoch", "step", "time", "lr", "seconds", "elapsed"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and ("val" in k or "train_loss" in k
                                                                            or k == "loss"):
                keys.append(k)
    return keys


_CURVE_TITLES = {"val_pr_auc": "validation PR-AUC (macro)", "val_roc_auc": "validation ROC-AUC (macro)",
                 "val_loss": "validation loss (each run's own loss; log scale)",
                 "train_loss": "training loss (each run's own loss; log scale)"}


def plot_validation_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]], path: Path, *,
                           note: str = "") -> Path | None:
    """One panel per logged metric (validation PR-AUC, losses ...), one line per run, x = epoch."""
    histories = {k: v for k, v in histories.items() if v}
    if not histories:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    keys: list[str] = []
    for rows in histories.values():
        keys += [k for k in _curve_keys(rows) if k not in keys]
    order = list(_CURVE_TITLES)
    keys = sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))[:6]
    if not keys:
        return None
    cols = 2 if len(keys) in (2, 4) else min(3, len(keys))
    rows_n = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(5.2 * cols, 3.8 * rows_n), squeeze=False)
    cmap = plt.get_cmap("tab20" if len(histories) > 10 else "tab10")
    for i, key in enumerate(keys):
        ax = axes[i // cols, i % cols]
        for j, (run, rows) in enumerate(histories.items()):
            pts = [(r.get("epoch", n), r[key]) for n, r in enumerate(rows) if isinstance(r.get(key), (int, float))]
            if pts:
                x, y = zip(*pts, strict=True)
                ax.plot(x, y, marker="o", ms=3, lw=1.4, color=cmap(j % cmap.N), label=run)
        ax.set_title(_CURVE_TITLES.get(key, key), fontsize=10)
        ys = [v for line in ax.get_lines() for v in line.get_ydata()]
        if "loss" in key and ys and min(ys) > 0:
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for k in range(len(keys), rows_n * cols):
        axes[k // cols, k % cols].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=9,
               bbox_to_anchor=(0.5, -0.02 - 0.035 * math.ceil(len(labels) / 6)))
    fig.suptitle("Validation curves per run" + (f"\n{note}" if note else ""), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def plot_group_pr_curves(systems: Mapping[str, np.ndarray], ground_truth: np.ndarray, groups: Sequence[str],
                         path: Path, *, note: str = "") -> Path:
    """Micro-averaged precision-recall curve of each system over the head, middle and tail tags."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _pyplot()
    names = list(systems)
    present = [g for g in GROUPS if g in groups]
    fig, axes = plt.subplots(1, len(names), figsize=(5.0 * len(names), 4.4), squeeze=False)
    groups_arr = np.asarray(groups)
    for ax, name in zip(axes[0], names, strict=True):
        pred = np.asarray(systems[name])
        for g in present:
            cols = groups_arr == g
            y = ground_truth[:, cols].ravel()
            s = pred[:, cols].ravel()
            if y.sum() == 0:
                continue
            precision, recall, _ = precision_recall_curve(y, s)
            ap = average_precision_score(y, s)
            ax.plot(recall, precision, color=GROUP_COLORS[g], lw=1.6,
                    label=f"{g} ({int(cols.sum())} tags): micro-AP {ap:.3f}")
            ax.axhline(y.mean(), color=GROUP_COLORS[g], lw=0.8, ls=":")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title(name, fontsize=11)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9, loc="upper right")
    fig.suptitle("Precision-recall by tag group (micro-averaged within the group; dotted: chance level)"
                 + (f"\n{note}" if note else ""), fontsize=11)
    fig.tight_layout()
    return _save(fig, path)

"""MediaEval-exact ranking metrics: scikit-learn's ``average_precision_score`` / ``roc_auc_score`` on
track-level (n_tracks, n_tags) matrices, with input checks and an explicit rule for undefined tags.

The MediaEval task's ``evaluate.py`` (MTG/mtg-jamendo-dataset, ``scripts/mediaeval/evaluate.py``) calls
``roc_auc_score`` and ``average_precision_score`` with ``average='macro'`` and ``'micro'``; the paper's tables
use the same calls. scikit-learn refuses (ROC-AUC) or returns a meaningless value (PR-AUC) for a tag with no
positive (or no negative) track in the evaluated split, so such tags are named in a warning and left out of
the macro averages; micro averages pool every tag and stay defined.

The implementation lives in ``focaltag.metrics``, below both training and evaluation; this module re-exports
it for evaluation's users and adds the default column names of a prediction matrix.
"""

from __future__ import annotations

from focaltag.metrics import (
    check_ground_truth,
    check_matrices,
    check_predictions,
    macro_scores,
    micro_scores,
    per_tag_scores,
    pr_auc_macro,
    pr_auc_micro,
    roc_auc_macro,
    roc_auc_micro,
    undefined_tags,
)

__all__ = [
    "check_matrices",
    "check_ground_truth",
    "check_predictions",
    "undefined_tags",
    "per_tag_scores",
    "pr_auc_macro",
    "roc_auc_macro",
    "pr_auc_micro",
    "roc_auc_micro",
    "micro_scores",
    "macro_scores",
    "default_tag_names",
]


def default_tag_names(n_tags: int) -> list[str]:
    """The 56 canonical mood/theme names when the width matches, else ``tag_000``...: columns need names."""
    from focaltag.data.tags import MOODTHEME_TAGS

    if n_tags == len(MOODTHEME_TAGS):
        return list(MOODTHEME_TAGS)
    return [f"tag_{j:03d}" for j in range(n_tags)]

"""MediaEval-exact ranking metrics for evaluation's users: a re-export of :mod:`focaltag.metrics` (which sits below
both training and evaluation, so their scores cannot drift apart) plus the default column names of a matrix
(:func:`focaltag.data.tags.default_tag_names`)."""

from __future__ import annotations

from focaltag import metrics as _metrics
from focaltag.data.tags import default_tag_names
from focaltag.metrics import (  # noqa: F401  (re-exported)
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

__all__ = [*_metrics.__all__, "default_tag_names"]

"""MediaEval-exact evaluation: macro/micro PR-AUC and ROC-AUC, tag groups, decision thresholds, bootstrap
confidence intervals, paired model comparison (with multiple-comparison adjustment) and prediction ensembles."""

from __future__ import annotations

from focaltag.evaluation.bootstrap import bootstrap_tag_scores, paired_bootstrap, resample_indices
from focaltag.evaluation.core import evaluate
from focaltag.evaluation.ensemble import mean_ensemble, optimize_weights, weighted_ensemble
from focaltag.evaluation.groups import count_training_tags, frequency_groups, load_groups
from focaltag.evaluation.metrics import (
    check_matrices,
    per_tag_scores,
    pr_auc_macro,
    pr_auc_micro,
    roc_auc_macro,
    roc_auc_micro,
)
from focaltag.evaluation.multiple import adjust_p_values, simultaneous_level
from focaltag.evaluation.thresholds import (
    apply_thresholds,
    best_f_thresholds,
    decide,
    load_thresholds,
    mediaeval_thresholds,
    save_thresholds,
)

__all__ = [
    "evaluate",
    "pr_auc_macro",
    "roc_auc_macro",
    "pr_auc_micro",
    "roc_auc_micro",
    "per_tag_scores",
    "check_matrices",
    "frequency_groups",
    "load_groups",
    "count_training_tags",
    "mediaeval_thresholds",
    "decide",
    "best_f_thresholds",
    "apply_thresholds",
    "save_thresholds",
    "load_thresholds",
    "paired_bootstrap",
    "adjust_p_values",
    "simultaneous_level",
    "bootstrap_tag_scores",
    "resample_indices",
    "mean_ensemble",
    "weighted_ensemble",
    "optimize_weights",
]

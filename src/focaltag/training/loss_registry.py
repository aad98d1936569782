"""The loss names focaltag knows, their default hyper-parameters and their table labels, in one torch-free place.

``focaltag.training.losses`` builds the modules, ``focaltag.training.config`` validates ``loss.name`` and the
experiment report labels its rows from this table, so adding a loss means adding it here (and its module in
``losses``); nothing else lists loss names. It imports nothing heavy, so config checks and ``--help`` stay fast.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LOSSES", "LOSS_LABELS", "PAPER_LOSSES", "NEEDS_COUNTS", "PRIOR_BIAS"]

# name -> default hyper-parameters (every accepted key; ``prior`` only feeds output_bias_init)
LOSSES: dict[str, dict[str, Any]] = {
    "bce": {"reduction": "mean"},
    "focal": {"alpha": 0.25, "gamma": 2.0, "prior": 0.01, "reduction": "batchmean"},
    "cb_focal": {"beta": 0.995, "gamma": 2.0, "prior": 0.01, "reduction": "batchmean"},
    "db_focal": {"alpha": 0.25, "gamma": 2.0, "lam": 2.0, "nu": 0.0, "map_alpha": 0.1, "map_beta": 10.0,
                 "map_gamma": 0.2, "reduction": "batchmean"},
    "asl": {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05, "reduction": "batchmean"},
}
# the report's row labels (the paper's names)
LOSS_LABELS: dict[str, str] = {"bce": "BCE Loss", "focal": "Focal Loss", "cb_focal": "CB Focal Loss",
                               "db_focal": "DB Focal Loss", "asl": "ASL"}
# the four losses the paper compares and averages into its ensemble
PAPER_LOSSES: tuple[str, ...] = ("bce", "focal", "cb_focal", "db_focal")
NEEDS_COUNTS: tuple[str, ...] = ("cb_focal", "db_focal")  # built from the training tag counts
PRIOR_BIAS: tuple[str, ...] = ("focal", "cb_focal")  # their output bias starts at -log((1 - prior) / prior)

assert set(LOSS_LABELS) == set(LOSSES) and set(PAPER_LOSSES) <= set(LOSSES)

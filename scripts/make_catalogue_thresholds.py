#!/usr/bin/env python3
"""Write the per-tag decision thresholds of usc-sail-2020 and its four members into the model catalogue.

Thresholds are chosen as the official MediaEval ``calculate_decisions.py`` does (per tag, the threshold of
scikit-learn's ``precision_recall_curve`` at the maximum F-score; decisions ``probability > threshold``) on the
paper authors' published VALIDATION predictions: all training data, standard sampling, 3,802 tracks x 56 tags
in alphabetical tag order. The ensemble's predictions are the float64 mean of the four members' (what focaltag's
tagger computes). The in-sample validation F-scores under that rule are stored next to the thresholds, for the
model card. tests/integration/test_models_catalogue.py recomputes everything from ../shared and compares.

Usage: python scripts/make_catalogue_thresholds.py [--predictions-dir ../shared/data/reference-predictions]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from focaltag.errors import FocaltagError
from focaltag.evaluation.thresholds import decide, decision_metrics, mediaeval_thresholds
from focaltag.models.catalogue import CATALOGUE_FILE, get_entry

REPO = Path(__file__).resolve().parents[1]
TEST_F_MACRO_REPORTED = 0.186  # the ensemble's thresholds applied to the authors' test predictions (issue #11)


def catalogue_thresholds_inputs(predictions_dir: Path) -> tuple[np.ndarray, dict[str, Path], list[str]]:
    """(validation ground truth, {member name: its published validation predictions}, tag names) under the
    authors' ``reference-predictions`` folder (all training data, standard sampling), for the thresholds."""
    root = Path(predictions_dir)
    entry = get_entry("usc-sail-2020")
    folder = root / "all_training_data" / "standard_sampling" / "validation"
    files = {m: folder / get_entry(m).extra["prediction_file"] for m in entry.members}
    missing = [str(p) for p in [root / "validation_ground_truth.npy", *files.values()] if not p.is_file()]
    if missing:
        raise FocaltagError(f"reference predictions not found: {missing[0]}")
    return np.load(root / "validation_ground_truth.npy"), files, list(entry.tag_names)


def compute(predictions_dir: Path) -> dict[str, dict]:
    """name -> {"thresholds": {tag: value}, "thresholds_info": {...}} for every entry with published predictions."""
    gt, members, tags = catalogue_thresholds_inputs(predictions_dir)
    preds = {name: np.load(path) for name, path in members.items()}
    ensemble = np.mean(np.stack([p.astype(np.float64) for p in preds.values()]), axis=0)
    out = {}
    for name, p in [*preds.items(), ("usc-sail-2020", ensemble)]:
        thr = mediaeval_thresholds(gt, p, tag_names=tags)
        scores = decision_metrics(gt, decide(p, thr, rule="gt"))
        info = {"rule": "gt", "selected_on": "the authors' published validation predictions (all data, standard "
                "sampling; 3,802 tracks), per tag at the maximum F-score of sklearn's precision_recall_curve",
                "validation_f_macro": round(scores["F-score-macro"], 4),
                "validation_f_micro": round(scores["F-score-micro"], 4)}
        if name == "usc-sail-2020":
            info["test_f_macro"] = TEST_F_MACRO_REPORTED
        out[name] = {"thresholds": {t: float(v) for t, v in zip(tags, thr, strict=True)}, "thresholds_info": info}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions-dir", type=Path, default=REPO.parent / "shared" / "data" /
                        "reference-predictions")
    args = parser.parse_args()
    result = compute(args.predictions_dir)
    cat = json.loads(CATALOGUE_FILE.read_text(encoding="utf-8"))
    for entry in cat["models"]:
        if entry["name"] in result:
            entry.update(result[entry["name"]])
    CATALOGUE_FILE.write_text(json.dumps(cat, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for name, r in result.items():
        print(f"{name}: macro F {r['thresholds_info']['validation_f_macro']} (in-sample, validation)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

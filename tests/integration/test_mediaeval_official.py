"""The MediaEval decision protocol end to end against the organisers' own files (../shared/data/mediaeval-baseline):
threshold selection as calculate_decisions.py, strict ``>`` decisions, the official TAG<TAB>VALUE threshold file,
and the ten metrics of the official results file, through the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from focaltag.cli import main
from focaltag.evaluation.thresholds import decide, load_thresholds, mediaeval_thresholds, thresholds_array

TEN = ("ROC-AUC-macro", "PR-AUC-macro", "precision-macro", "recall-macro", "F-score-macro",
       "ROC-AUC-micro", "PR-AUC-micro", "precision-micro", "recall-micro", "F-score-micro")


@pytest.fixture(scope="module")
def official(mediaeval_baseline_dir: Path) -> dict:
    d = mediaeval_baseline_dir
    results = {}
    for line in (d / "baseline_vggish_results.tsv").read_text().splitlines():
        if line.strip():
            name, value = line.split("\t")
            results[name] = float(value)
    return {
        "gt": d / "groundtruth.npy", "pred": d / "baseline_vggish_predictions.npy",
        "thresholds": d / "baseline_vggish_thresholds.txt", "decisions": np.load(d / "baseline_vggish_decisions.npy"),
        "results": results,
    }


def _evaluate(capsys: pytest.CaptureFixture, official: dict, *extra: str) -> dict:
    assert main(["evaluate", "--ground-truth", str(official["gt"]), "--predictions", str(official["pred"]),
                 "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def _assert_official_metrics(result: dict, official: dict) -> None:
    assert set(official["results"]) == set(TEN)
    for name in TEN:  # the official file prints 6 decimals
        assert result[name] == pytest.approx(official["results"][name], abs=5e-7), name


def test_threshold_selection_reproduces_official_thresholds(official: dict) -> None:
    gt, pred = np.load(official["gt"]), np.load(official["pred"])
    ours = mediaeval_thresholds(gt, pred)
    theirs = load_thresholds(official["thresholds"])
    names = list(theirs)
    assert len(names) == 56 and names == sorted(names)
    np.testing.assert_array_equal(ours, thresholds_array(theirs, names))


def test_strict_rule_reproduces_official_decisions(official: dict) -> None:
    pred = np.load(official["pred"])
    theirs = load_thresholds(official["thresholds"])
    thr = thresholds_array(theirs, list(theirs))
    np.testing.assert_array_equal(decide(pred, thr), official["decisions"])
    # the threshold is itself a score, so ">=" turns on at least one more track for every tag
    ge = decide(pred, thr, rule="ge")
    assert (ge.sum(axis=0) > official["decisions"].sum(axis=0)).all()


def test_cli_thresholds_file_gives_the_ten_official_metrics(capsys, official: dict, tmp_path: Path) -> None:
    out = tmp_path / "decisions.npy"
    result = _evaluate(capsys, official, "--thresholds", str(official["thresholds"]), "--save-decisions", str(out))
    _assert_official_metrics(result, official)
    assert result["decision_rule"] == "gt"
    saved = np.load(out)
    assert saved.dtype == bool
    np.testing.assert_array_equal(saved, official["decisions"])


def test_cli_thresholds_from_gives_official_file_and_metrics(capsys, official: dict, tmp_path: Path) -> None:
    thr_file, dec_file = tmp_path / "thresholds.txt", tmp_path / "decisions.npy"
    result = _evaluate(capsys, official, "--thresholds-from", str(official["gt"]), str(official["pred"]),
                       "--save-thresholds", str(thr_file), "--save-decisions", str(dec_file))
    _assert_official_metrics(result, official)
    # the written file is the official format, value for value
    assert load_thresholds(thr_file) == load_thresholds(official["thresholds"])
    assert all(len(line.split("\t")) == 2 for line in thr_file.read_text().splitlines())
    np.testing.assert_array_equal(np.load(dec_file), official["decisions"])


def test_cli_decision_rule_ge_is_explicit_and_differs(capsys, official: dict) -> None:
    ge = _evaluate(capsys, official, "--thresholds", str(official["thresholds"]), "--decision-rule", "ge")
    assert ge["decision_rule"] == "ge"
    # ">=" adds the threshold-defining track per tag: recall can only rise, and the result is not the official one
    assert ge["recall-macro"] >= official["results"]["recall-macro"]
    assert ge["F-score-macro"] != pytest.approx(official["results"]["F-score-macro"], abs=5e-7)
    for name in ("ROC-AUC-macro", "PR-AUC-macro"):  # ranking metrics do not depend on the rule
        assert ge[name] == pytest.approx(official["results"][name], abs=5e-7)


def test_save_decisions_without_thresholds_is_one_line_error(capsys, official: dict, tmp_path: Path) -> None:
    rc = main(["evaluate", "--ground-truth", str(official["gt"]), "--predictions", str(official["pred"]),
               "--save-decisions", str(tmp_path / "d.npy")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--save-decisions needs thresholds" in err[0]

"""The paper's Tables I-IV from prediction matrices: scores with bootstrap 95 % intervals, mean ensembles,
paired bootstrap tests against BCE (p-values adjusted for multiple testing per table), cross-validation summaries,
figures; ``report.md`` + ``results.json``."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focaltag._io import write_json, write_text
from focaltag.data.groups import DEFAULT_GROUP_THRESHOLDS, GROUP_NAMES, auto_group_thresholds
from focaltag.errors import EvaluationError
from focaltag.evaluation.multiple import ADJUST_LABELS, DEFAULT_ADJUST, check_adjust_method
from focaltag.experiments import figures
from focaltag.experiments.spec import TableSpec

__all__ = [
    "ReportOptions",
    "build_results",
    "summarize_splits",
    "render_report",
    "write_report",
    "default_tables",
    "auto_group_thresholds",
    "PUBLISHED_TABLE_IV",
]

log = logging.getLogger(__name__)

PR, ROC = "PR-AUC-macro", "ROC-AUC-macro"
METRICS = (PR, ROC, "PR-AUC-micro", "ROC-AUC-micro")
GROUPS = GROUP_NAMES
# Paper Table IV (MediaEval 2020, TEST split): quoted for orientation only, never recomputed here.
PUBLISHED_TABLE_IV = (
    ("ensemble all data (paper)", 0.161, 0.781),
    ("best single model (paper)", 0.156, 0.778),
    ("CP-JKU avg ensemble", 0.155, 0.773),
    ("ensemble jamendo only (paper)", 0.142, 0.763),
    ("HCMUS ensemble wavenet", 0.141, 0.766),
    ("AugsBurger fusion with attention CNN", 0.131, 0.753),
)


@dataclass
class ReportOptions:
    """How the matrices are scored and described."""

    baseline: str = "bce"  # the system paired tests compare against
    bootstrap: int = 1000
    seed: int = 0
    group_thresholds: Any = DEFAULT_GROUP_THRESHOLDS  # (head_above, tail_at_most) or "auto"
    subset: str = "validation"
    synthetic: bool = False
    title: str = "focaltag experiment report"
    notes: list[str] = field(default_factory=list)
    adjust: str = DEFAULT_ADJUST  # multiple-testing adjustment of each table's p-values: holm, bonferroni, none

    def __post_init__(self) -> None:
        check_adjust_method(self.adjust)


def default_tables(systems: Sequence[str], ensembles: Mapping[str, Sequence[str]], *, baseline: str,
                   has_groups: bool, class_aware: Sequence[str] = ()) -> dict[str, TableSpec]:
    """Table I (every given system + ensembles), II (groups), III (class-aware set, if any), IV (ranking)."""
    standard = [s for s in systems if s not in class_aware]
    ca = [s for s in systems if s in class_aware]
    tables = {"table1": TableSpec("metrics", "Table I: performance per loss and ensemble", "",
                                  standard, baseline if baseline in standard else None)}
    if has_groups:
        tables["table2"] = TableSpec("groups", "Table II: head / middle / tail PR-AUC", "", standard)
    if ca:
        ca_base = next((s for s in ca if s.startswith(baseline)), None)
        tables["table3"] = TableSpec("metrics", "Table III: class-aware resampling", "", ca, ca_base)
    tables["table4"] = TableSpec("ranking", "Table IV: systems ranked by PR-AUC", "", list(systems),
                                 baseline if baseline in systems else None)
    return tables


def _ci_method() -> str:
    from focaltag.evaluation.bootstrap import INTERVAL_METHOD

    return INTERVAL_METHOD


def _import_evaluation() -> Any:
    import focaltag.evaluation as ev

    return ev


def _evaluate_system(ev: Any, gt: np.ndarray, pred: np.ndarray, tag_names: Sequence[str],
                     counts: np.ndarray | None, thresholds: tuple[int, int], opts: ReportOptions) -> dict:
    res = ev.evaluate(gt, pred, tag_names=list(tag_names), train_counts=counts, group_thresholds=thresholds,
                      per_tag=True, bootstrap=opts.bootstrap, seed=opts.seed)
    out: dict[str, Any] = {"metrics": {m: float(res[m]) for m in METRICS if m in res}}
    out["ci"] = {m: [float(v[0]), float(v[1])] for m, v in res.get("ci", {}).get("intervals", {}).items()
                 if m in METRICS and v[0] is not None}
    if res.get("groups"):
        out["groups"] = {g: {"PR-AUC": e.get("PR-AUC"), "ROC-AUC": e.get("ROC-AUC"), "n_tags": e.get("n_tags"),
                             "ci": e.get("ci", {})} for g, e in res["groups"].items()}
    per_tag = res.get("per_tag", {})
    out["per_tag"] = {k: [per_tag[t][k] for t in tag_names] for k in ("PR-AUC", "ROC-AUC")}
    if res.get("excluded_tags"):
        out["excluded_tags"] = list(res["excluded_tags"])
    return out


def _paired(ev: Any, gt: np.ndarray, a: np.ndarray, b: np.ndarray, opts: ReportOptions) -> dict[str, Any]:
    res = ev.paired_bootstrap(gt, a, b, n_resamples=max(opts.bootstrap, 1), seed=opts.seed)
    out = {}
    for metric in (PR, ROC):
        r = res.get(metric, res) if isinstance(res, Mapping) else res
        out[metric] = {"diff": float(r["diff"]), "p": float(r["p_value"] if "p_value" in r else r["p"]),
                       "se": float(r.get("se", np.nan)), "ci": [float(x) for x in r.get("ci", (np.nan, np.nan))]}
    return out


_TESTED_METRICS = {"metrics": (PR, ROC), "ranking": (PR,)}  # the Δ columns each kind of table shows
_DELTA = {PR: "ΔPR-AUC", ROC: "ΔROC-AUC"}


def _adjust_table(paired: Mapping[tuple[str, str], Mapping[str, Any]], systems: Sequence[str], base: str,
                  kind: str, method: str, labels: Mapping[str, str], level: float = 0.95) -> dict[str, Any]:
    """Adjust the p-values of one table as one family: every row tested against ``base`` times every Δ metric
    the table shows. Returns the family's description, with each test's raw and adjusted p-value and the
    interval of its difference that matches the adjustment (Bonferroni-simultaneous, or per comparison)."""
    from focaltag.evaluation.bootstrap import se_interval
    from focaltag.evaluation.multiple import adjust_p_values, describe_intervals, simultaneous_level

    metrics = _TESTED_METRICS[kind]
    rows = [(s, m) for s in systems if s != base and (s, base) in paired for m in metrics]
    adjusted = adjust_p_values([paired[(s, base)][m]["p"] for s, m in rows], method,
                               labels=[f"{s} vs {base} ({m})" for s, m in rows])
    each = simultaneous_level(level, len(rows), method)
    tests = []
    for (s, m), p_adj in zip(rows, adjusted, strict=True):
        r = paired[(s, base)][m]
        tests.append({"system": s, "metric": m, "diff": r["diff"], "p": r["p"], "p_adjusted": float(p_adj),
                      "ci_simultaneous": se_interval(r["diff"], r["se"], each, bounds=(-1.0, 1.0))})
    n_sys = len(dict.fromkeys(s for s, _ in rows))
    deltas = ", ".join(_DELTA[m] for m in metrics)
    return {"method": method, "size": len(rows), "metrics": list(metrics), "baseline": base,
            "family": f"the {n_sys} rows of this table tested against {labels.get(base, base)} x {len(metrics)} "
                      f"metric{'s' if len(metrics) > 1 else ''} ({deltas}) = {len(rows)} tests",
            "interval_level": each, "intervals": describe_intervals(level, len(rows), method), "tests": tests}


def build_results(systems: Mapping[str, np.ndarray], ground_truth: np.ndarray, *,
                  tag_names: Sequence[str] | None = None, train_counts: np.ndarray | None = None,
                  ensembles: Mapping[str, Sequence[str]] | None = None,
                  tables: Mapping[str, TableSpec] | None = None, labels: Mapping[str, str] | None = None,
                  options: ReportOptions | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Score every system and ensemble; returns (results dict for JSON, all prediction matrices by name)."""
    opts = options or ReportOptions()
    ev = _import_evaluation()
    from focaltag.evaluation.metrics import check_ground_truth, default_tag_names

    gt = check_ground_truth(ground_truth)
    tag_names = list(tag_names) if tag_names is not None else default_tag_names(gt.shape[1])
    if not systems:
        raise EvaluationError("no prediction matrices given; pass at least one NAME=PRED.npy")
    preds = {}
    for name, pred in systems.items():
        pred = np.asarray(pred)
        if pred.shape != gt.shape:
            raise EvaluationError(f"predictions {name!r} have shape {pred.shape} but the ground truth has "
                                  f"{gt.shape}; expected the same (n_tracks, n_tags)")
        preds[name] = pred
    ensembles = dict(ensembles or {})
    for name, members in ensembles.items():
        missing = [m for m in members if m not in preds]
        if missing:
            raise EvaluationError(f"ensemble {name!r}: member {missing[0]!r} has no predictions")
        preds[name] = np.asarray(ev.mean_ensemble([preds[m] for m in members]))
    counts = np.asarray(train_counts) if train_counts is not None else None
    if counts is not None and counts.shape != (gt.shape[1],):
        raise EvaluationError(f"train counts have {counts.shape} entries but the matrices have {gt.shape[1]} "
                              "tags; count the training tags with the same tag list")
    thresholds = opts.group_thresholds
    if counts is not None and thresholds == "auto":
        thresholds = auto_group_thresholds(counts)
    thresholds = tuple(int(t) for t in thresholds) if thresholds != "auto" else DEFAULT_GROUP_THRESHOLDS
    labels = dict(labels or {})
    results: dict[str, Any] = {
        "meta": {"title": opts.title, "subset": opts.subset, "n_tracks": int(gt.shape[0]),
                 "n_tags": int(gt.shape[1]), "bootstrap": opts.bootstrap, "seed": opts.seed,
                 "ci_method": _ci_method() if opts.bootstrap > 0 else None,
                 "baseline": opts.baseline, "synthetic": opts.synthetic, "notes": list(opts.notes),
                 "group_thresholds": list(thresholds), "auto_thresholds": opts.group_thresholds == "auto"},
        "tag_names": tag_names,
        "train_counts": counts.tolist() if counts is not None else None,
        "systems": {},
    }
    if counts is not None:
        groups = figures.tag_groups(counts, thresholds)
        results["meta"]["group_sizes"] = {g: groups.count(g) for g in GROUPS}
    for name, pred in preds.items():
        log.info("scoring %s (%d bootstrap resamples)", name, opts.bootstrap)
        entry = _evaluate_system(ev, gt, pred, tag_names, counts, thresholds, opts)
        entry["label"] = labels.get(name, name)
        entry["kind"] = "ensemble" if name in ensembles else "system"
        if name in ensembles:
            entry["members"] = list(ensembles[name])
        results["systems"][name] = entry
    if tables is None:
        tables = default_tables(list(preds), ensembles, baseline=opts.baseline, has_groups=counts is not None)
    results["tables"] = {}
    paired: dict[tuple[str, str], dict] = {}
    for tname, table in tables.items():
        shown = [s for s in table.systems if s in preds]
        base = table.baseline if table.baseline in shown else (opts.baseline if opts.baseline in shown else None)
        results["tables"][tname] = {"kind": table.kind, "title": table.title, "caption": table.caption,
                                    "systems": shown, "baseline": base}
        if base is None or table.kind == "groups" or opts.bootstrap <= 0:
            continue
        for s in shown:
            if s != base and (s, base) not in paired:
                paired[(s, base)] = _paired(ev, gt, preds[s], preds[base], opts)
        results["tables"][tname]["multiple_testing"] = _adjust_table(
            paired, shown, base, table.kind, opts.adjust, {n: e["label"] for n, e in results["systems"].items()})
    results["meta"]["adjust"] = opts.adjust
    results["paired_tests"] = [{"system": s, "baseline": b, **{m: v for m, v in r.items()}}
                               for (s, b), r in paired.items()]
    return results, preds


def summarize_splits(per_split: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation (ddof=1) of each system's metrics across cross-validation splits."""
    splits = sorted(per_split)
    names = sorted({n for r in per_split.values() for n in r["systems"]})
    out: dict[str, Any] = {"splits": splits, "systems": {}}
    for name in names:
        entry = {}
        for metric in METRICS:
            values = [per_split[s]["systems"][name]["metrics"].get(metric) for s in splits
                      if name in per_split[s]["systems"]]
            values = [float(v) for v in values if v is not None]
            if values:
                entry[metric] = {"mean": float(np.mean(values)),
                                 "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                                 "n": len(values), "values": values}
        out["systems"][name] = entry
    return out


# ----------------------------------------------------------------------------------------------- rendering
def _f(x: Any, nd: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def _with_ci(value: Any, ci: Sequence[float] | None) -> str:
    """``value [lo, hi]``; the interval is rounded outwards to 3 decimals so the printed interval still
    contains the printed 4-decimal value (ordinary rounding could print ``0.3138 [0.314, ...]``)."""
    if ci is None or value is None or ci[0] is None:
        return _f(value)
    lo, hi = math.floor(ci[0] * 1000 + 1e-9) / 1000, math.ceil(ci[1] * 1000 - 1e-9) / 1000
    return f"{_f(value)} [{_f(lo, 3)}, {_f(hi, 3)}]"


def _p(p: float) -> str:
    """``p<0.001`` or ``p=0.123``."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def _diff(test: Mapping[str, Any] | None, method: str) -> str:
    """``Δ (p=raw; Holm p=adjusted) *``; the star marks an adjusted p-value below 0.05, never a raw one."""
    if not test:
        return "-"
    if method == "none":
        return f"{test['diff']:+.4f} ({_p(test['p'])}, unadjusted)"
    star = " *" if test["p_adjusted"] < 0.05 else ""
    return f"{test['diff']:+.4f} ({_p(test['p'])}; {ADJUST_LABELS[method]} {_p(test['p_adjusted'])}){star}"


def _table_tests(table: Mapping[str, Any]) -> dict[tuple[str, str], dict]:
    """(system, metric) -> that table's test, with its raw and adjusted p-values."""
    family = table.get("multiple_testing") or {}
    return {(t["system"], t["metric"]): t for t in family.get("tests", [])}


def _family_note(results: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    """The line under a table that names the family its p-values were adjusted over."""
    family = table.get("multiple_testing")
    if not family or not family["tests"]:
        return []
    method, size = family["method"], family["size"]
    if method == "none":
        text = (f"p-values are **not adjusted** for the {size} tests of this table ({family['family']}); "
                "no difference is marked significant.")
    else:
        how = "Holm's step-down method" if method == "holm" else "Bonferroni's method"
        text = (f"{ADJUST_LABELS[method]} p: the raw p-value adjusted by {how} over this table's family, "
                f"{family['family']}; * marks {ADJUST_LABELS[method]} p < 0.05.")
    has_ci = any(results["systems"][s].get("ci") for s in table["systems"])
    if has_ci:
        text += " The score intervals are per system (95 % each, not simultaneous)."
    text += f" Intervals of the differences (`ci_simultaneous` in results.json): {family['intervals']}."
    return ["", text]


def _cv_cell(results: Mapping[str, Any], name: str, metric: str) -> str:
    cv = results.get("cv", {}).get("systems", {}).get(name, {}).get(metric)
    return f"{cv['mean']:.4f} ± {cv['std']:.4f}" if cv else "n/a"


def _metrics_table(results: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    systems, base = table["systems"], table["baseline"]
    tests = _table_tests(table)
    method = results["meta"].get("adjust", DEFAULT_ADJUST)
    has_ci = any(results["systems"][s].get("ci") for s in systems)
    ci_txt = " [95 % CI]" if has_ci else ""
    head = ["Approach", f"PR-AUC{ci_txt}", f"ROC-AUC{ci_txt}"]
    cv = "cv" in results
    if cv:
        n = len(results["cv"]["splits"])
        head += [f"PR-AUC mean ± std ({n} splits)", f"ROC-AUC mean ± std ({n} splits)"]
    p_head = "p" if method == "none" else f"p; {ADJUST_LABELS[method]} p"
    if base is not None and tests:
        label = results["systems"][base]["label"]
        head += [f"ΔPR-AUC vs {label} ({p_head})", f"ΔROC-AUC vs {label} ({p_head})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in systems:
        e = results["systems"][s]
        row = [e["label"], _with_ci(e["metrics"].get(PR), e["ci"].get(PR)),
               _with_ci(e["metrics"].get(ROC), e["ci"].get(ROC))]
        if cv:
            row += [_cv_cell(results, s, PR), _cv_cell(results, s, ROC)]
        if base is not None and tests:
            row += ([_diff(tests.get((s, PR)), method), _diff(tests.get((s, ROC)), method)] if s != base
                    else ["(baseline)", "(baseline)"])
        lines.append("| " + " | ".join(row) + " |")
    return lines + _family_note(results, table)


def _groups_table(results: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    sizes = results["meta"].get("group_sizes")
    if not sizes:
        return ["(no training tag counts given: head/middle/tail groups cannot be formed; pass --train-tsv)"]
    head_t, tail_t = results["meta"]["group_thresholds"]
    names = {"head": f"Head (> {head_t}; {sizes['head']} tags)",
             "middle": f"Middle ({figures.middle_range(head_t, tail_t)}; {sizes['middle']} tags)",
             "tail": f"Tail (<= {tail_t}; {sizes['tail']} tags)"}
    lines = ["| Approach | " + " | ".join(names[g] for g in GROUPS) + " |", "|---|---|---|---|"]
    for s in table["systems"]:
        e = results["systems"][s]
        cells = []
        for g in GROUPS:
            ge = e.get("groups", {}).get(g, {})
            cells.append(_with_ci(ge.get("PR-AUC"), ge.get("ci", {}).get("PR-AUC")) if ge else "n/a")
        lines.append(f"| {e['label']} | " + " | ".join(cells) + " |")
    return lines


def _ranking_table(results: Mapping[str, Any], table: Mapping[str, Any]) -> list[str]:
    systems = sorted(table["systems"], key=lambda s: -results["systems"][s]["metrics"].get(PR, -1.0))
    tests = _table_tests(table)
    method = results["meta"].get("adjust", DEFAULT_ADJUST)
    base = table["baseline"] if tests else None
    p_head = "p" if method == "none" else f"p; {ADJUST_LABELS[method]} p"
    lines = ["| Rank | System | PR-AUC [95 % CI] | ROC-AUC [95 % CI] | "
             + (f"ΔPR-AUC vs {results['systems'][base]['label']} ({p_head}) |" if base else "Members |"),
             "|---|---|---|---|---|"]
    for rank, s in enumerate(systems, start=1):
        e = results["systems"][s]
        last = (_diff(tests.get((s, PR)), method) if s != base else "(baseline)") if base \
            else ", ".join(e.get("members", [])) or "-"
        lines.append(f"| {rank} | {e['label']} | {_with_ci(e['metrics'].get(PR), e['ci'].get(PR))} | "
                     f"{_with_ci(e['metrics'].get(ROC), e['ci'].get(ROC))} | {last} |")
    lines += _family_note(results, table)
    from focaltag.data.tags import MOODTHEME_TAGS

    if not results["meta"]["synthetic"] and results.get("tag_names") == list(MOODTHEME_TAGS):
        lines += ["", "For orientation only: the paper's Table IV (MediaEval 2020 submissions, **test** split; "
                  "quoted, not recomputed here, so not comparable with a validation-split table):", "",
                  "| Submission | PR-AUC | ROC-AUC |", "|---|---|---|"]
        lines += [f"| {n} | {p:.3f} | {r:.3f} |" for n, p, r in PUBLISHED_TABLE_IV]
    return lines


def _any_outside_ci(results: Mapping[str, Any]) -> bool:
    for e in results["systems"].values():
        for metric, (lo, hi) in e.get("ci", {}).items():
            value = e["metrics"].get(metric)
            if value is not None and not lo - 1e-12 <= value <= hi + 1e-12:
                return True
    return False


def _adjust_sentence(method: str) -> str:
    if method == "none":
        return ("; the p-values are not adjusted for multiple testing (--adjust none), so no difference is "
                "called significant.")
    how = "Holm's step-down method" if method == "holm" else "Bonferroni's method"
    return (f", and beside it that p-value adjusted for multiple testing by {how} over the table's family "
            "(its rows x the Δ metrics it shows, named under each table). A difference is called significant "
            f"(*) only when its {ADJUST_LABELS[method]}-adjusted p-value is below 0.05.")


def render_report(results: Mapping[str, Any], *, figure_paths: Sequence[str] = ()) -> str:
    """Markdown report: data note, Tables I-IV in the paper's layout with 95 % intervals and p-values."""
    meta = results["meta"]
    out = [f"# {meta['title']}", ""]
    if meta["synthetic"]:
        out += ["> **SYNTHETIC DATA.** These systems were trained and scored on generated audio that only "
                "borrows MTG-Jamendo's tag names and imbalance. The numbers show that the pipeline runs end to "
                "end; they say nothing about MTG-Jamendo or the paper's results.", ""]
    out.append(f"- Scored split: **{meta['subset']}** ({meta['n_tracks']:,} tracks x {meta['n_tags']} tags); "
               "macro PR-AUC / ROC-AUC as scikit-learn `average_precision_score` / `roc_auc_score` "
               "(MediaEval).")
    if meta["bootstrap"] > 0:
        out.append(f"- 95 % intervals: point estimate ± 1.96 bootstrap standard errors (resampling tracks, "
                   f"{meta['bootstrap']} resamples, seed {meta['seed']}): the range of the score expected on "
                   "another test set of the same size (coverage measured by bench/coverage.py). Δ columns: "
                   "paired bootstrap (same resampled tracks for both systems), two-sided p-value from the same "
                   "standard error" + _adjust_sentence(meta.get("adjust", DEFAULT_ADJUST)))
        if _any_outside_ci(results):  # cannot happen with centred intervals; kept as a guard
            out.append("- WARNING: some point estimates lie outside their interval; the intervals are invalid.")
    else:
        out.append("- No bootstrap requested: no intervals or paired tests.")
    if meta.get("group_sizes"):
        a, b = meta["group_thresholds"]
        how = " (chosen automatically to keep the paper's 14/27/15 shares)" if meta.get("auto_thresholds") else ""
        out.append(f"- Tag groups by training count: head > {a}, middle {figures.middle_range(a, b)}, tail <= {b}{how}: "
                   + ", ".join(f"{g} {n}" for g, n in meta["group_sizes"].items()) + " tags.")
    for e in (e for e in results["systems"].values() if e.get("kind") == "ensemble"):
        members = ", ".join(results["systems"][m]["label"] for m in e["members"])
        out.append(f"- {e['label']}: mean of the sigmoid outputs of {members}.")
    if "cv" in results:
        out.append(f"- Cross-validation: splits {', '.join(map(str, results['cv']['splits']))}; the main "
                   "columns are split "
                   f"{meta.get('split', results['cv']['splits'][0])}, mean ± std (ddof=1) across splits beside them.")
    out += [f"- {n}" for n in meta.get("notes", [])]
    out.append("")
    renderers = {"metrics": _metrics_table, "groups": _groups_table, "ranking": _ranking_table}
    for table in results["tables"].values():
        out += [f"## {table['title'] or 'Table'}", ""]
        if table.get("caption"):
            out += [table["caption"], ""]
        out += renderers[table["kind"]](results, table)
        out.append("")
    if figure_paths:
        out += ["## Figures", ""]
        for p in figure_paths:
            out += [f"![{Path(p).stem}]({p})", ""]
    return "\n".join(out).rstrip() + "\n"


def write_report(results: dict[str, Any], preds: Mapping[str, np.ndarray], ground_truth: np.ndarray,
                 out_dir: str | Path, *, distributions: Mapping[str, np.ndarray] | None = None,
                 histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 figures_on: bool = True) -> str:
    """Write report.md, results.json and figures/ under ``out_dir``; returns the markdown."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = make_figures(results, preds, ground_truth, out / "figures", distributions=distributions,
                         histories=histories) if figures_on else []
    rel = [str(Path(p).relative_to(out)) for p in paths]
    results["figures"] = rel
    text = render_report(results, figure_paths=rel)
    write_json(out / "results.json", results)
    write_text(out / "report.md", text)
    return text


def make_figures(results: Mapping[str, Any], preds: Mapping[str, np.ndarray], ground_truth: np.ndarray,
                 fig_dir: Path, *, distributions: Mapping[str, np.ndarray] | None = None,
                 histories: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> list[Path]:
    """Every figure the data allows: distribution, per-tag PR-AUC per table, validation curves, PR curves."""
    meta = results["meta"]
    note = "SYNTHETIC DATA: not MTG-Jamendo results" if meta["synthetic"] else ""
    thresholds = tuple(meta["group_thresholds"])
    names = results["tag_names"] or [f"tag_{j:03d}" for j in range(meta["n_tags"])]
    counts = np.asarray(results["train_counts"]) if results["train_counts"] is not None else None
    paths: list[Path] = []
    if counts is not None:
        dists = dict(distributions) if distributions else {"training set": counts}
        paths.append(figures.plot_training_distribution(dists, names, thresholds,
                                                        fig_dir / "tag_distribution.png", note=note))
    for tname, table in results["tables"].items():
        if table["kind"] != "metrics":
            continue
        per_tag = {results["systems"][s]["label"]: np.array(
            [np.nan if v is None else v for v in results["systems"][s]["per_tag"]["PR-AUC"]], float)
            for s in table["systems"]}
        paths.append(figures.plot_per_tag_pr_auc(
            per_tag, names, counts, thresholds, fig_dir / f"per_tag_pr_auc_{tname}.png",
            title=f"{table['title']}: per-tag PR-AUC ({meta['subset']} split)", note=note))
    if histories:
        p = figures.plot_validation_curves(histories, fig_dir / "validation_curves.png", note=note)
        if p is not None:
            paths.append(p)
    ens = [s for s, e in results["systems"].items() if e.get("kind") == "ensemble"]
    if counts is not None and ens:
        groups = figures.tag_groups(counts, thresholds)
        paths.append(figures.plot_group_pr_curves(
            {results["systems"][s]["label"]: preds[s] for s in ens}, np.asarray(ground_truth), groups,
            fig_dir / "pr_curves_ensembles.png", note=note))
    return paths

"""Experiment grids (the paper's Tables I-IV in one command) and reports from prediction matrices."""

from __future__ import annotations

from focaltag.experiments.report import ReportOptions, build_results, render_report, write_report
from focaltag.experiments.runner import ExperimentResult, run_demo_experiment, run_experiment
from focaltag.experiments.spec import ExperimentSpec, load_experiment, parse_experiment, resolve_experiment

__all__ = [
    "ExperimentSpec",
    "ExperimentResult",
    "ReportOptions",
    "load_experiment",
    "parse_experiment",
    "resolve_experiment",
    "run_experiment",
    "run_demo_experiment",
    "build_results",
    "render_report",
    "write_report",
]

"""CI cannot pass without the reference data: with FOCALTAG_REQUIRE_SHARED=1 a test needing ../shared fails
instead of skipping (tests/conftest.py), and .ci/run switches that on and runs the whole proof."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROBE = "tests/integration/test_mediaeval_official.py::test_save_decisions_without_thresholds_is_one_line_error"


def _run_probe(tmp_path: Path, require: str | None) -> subprocess.CompletedProcess:
    env = dict(os.environ, FOCALTAG_SHARED=str(tmp_path / "no-shared-here"))
    env.pop("FOCALTAG_REQUIRE_SHARED", None)
    if require is not None:
        env["FOCALTAG_REQUIRE_SHARED"] = require
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", PROBE],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("require", "outcome"), [(None, "skipped"), ("0", "skipped"), ("1", "error")])
def test_missing_shared_skips_or_fails(tmp_path: Path, require: str | None, outcome: str) -> None:
    proc = _run_probe(tmp_path, require)
    out = proc.stdout + proc.stderr
    assert f"1 {outcome}" in out, out[-2000:]
    assert "no-shared-here" in out  # the message names the missing folder
    if outcome == "error":  # a fixture that fails is an error: the run fails
        assert proc.returncode == 1 and "FOCALTAG_REQUIRE_SHARED=1 requires it" in out
    else:
        assert proc.returncode == 0


def test_ci_mode_fails_at_once_without_shared() -> None:
    """``scripts/test --ci`` (what .ci/run runs) stops before installing anything when ../shared is absent."""
    proc = subprocess.run(["bash", str(REPO / "scripts" / "test"), "--ci"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, FOCALTAG_SHARED="/nonexistent/shared"))
    assert proc.returncode == 1
    assert "/nonexistent/shared is missing" in proc.stderr and ">> " not in proc.stdout


def test_ci_entry_point_runs_every_step() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "FOCALTAG_REQUIRE_SHARED=1" in ci and "./scripts/test --ci" in ci and "scripts/ci-system-deps" in ci
    test = (REPO / "scripts" / "test").read_text()
    for needle in ("ruff check src tests bench", '-m "not slow"', "-m slow", "focaltag demo --quick",
                   "python -m mypy"):
        assert needle in test, needle

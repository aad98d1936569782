"""``focaltag demo`` wiring without the minutes of training: the real synthesis, statistics, report printing
and ensemble tagging steps run, the experiment grid is replaced by a fake that leaves two tiny trained runs.
(CI also runs the real ``focaltag demo --quick`` end to end: scripts/test --ci.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import focaltag.data.synth as synth
import focaltag.experiments.runner as runner
from focaltag.cli import main


@pytest.fixture
def fake_grid(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {"failed": []}
    real_synth = synth.synthesize_dataset

    def small_synth(out_dir: Any, **kwargs: Any) -> Any:
        seen["synth"] = dict(kwargs)
        return real_synth(out_dir, **{**kwargs, "n_tracks": 60, "min_duration": 3.0, "max_duration": 4.0})

    def fake_run_experiment(spec: Any, out: Path, *, preset: str | None = None, **kwargs: Any) -> Any:
        from focaltag.data.metadata import TagVocabulary, read_tracks, split_files
        from focaltag.models import create_model, save_model

        seen["preset"], seen["out"] = preset, Path(out)
        train = read_tracks(split_files(Path(out) / "data")["train"])
        tags = TagVocabulary.from_tracks(train, category="mood/theme").tags
        for name in ("bce", "focal"):
            model = create_model("short_chunk_resnet", n_tags=len(tags), width=4, variant="won2020", tag_names=tags)
            (Path(out) / "split-0" / "runs" / name).mkdir(parents=True)
            save_model(model, Path(out) / "split-0" / "runs" / name / "best.pt")
        report = Path(out) / "report.md"
        text = "# demo report\n\n- SYNTHETIC\n\n## Table I: performance per loss\n\n| Approach | PR-AUC |\n"
        report.write_text(text)
        return runner.ExperimentResult(out_dir=Path(out), report_path=report, report_text=text, results={},
                                       trained=["split-0/bce", "split-0/focal"], failed=list(seen["failed"]))

    monkeypatch.setattr(synth, "synthesize_dataset", small_synth)
    monkeypatch.setattr(runner, "run_experiment", fake_run_experiment)
    return seen


def test_demo_quick_runs_every_step_in_order(fake_grid, tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert fake_grid["preset"] == "demo-quick" and fake_grid["out"] == out
    assert fake_grid["synth"]["n_tracks"] > 0  # the preset's synthesis settings reach the synthesizer
    assert (out / "data" / "splits" / "split-0").is_dir() and (out / "tag-distribution.png").is_file()
    assert "## Table I" in printed and "focaltag demo finished" in printed
    assert str(out / "report.md") in printed
    tagged = next(line for line in printed.splitlines() if line.strip().startswith("tagged"))
    assert str(out / "data" / "audio") in tagged  # step 4 tagged a synthetic test track with the runs


def test_demo_fails_with_exit_1_when_a_run_failed(fake_grid, tmp_path, capsys) -> None:
    fake_grid["failed"].append("split-0/focal: diverged")
    assert main(["demo", "--quick", "--out", str(tmp_path / "demo")]) == 1

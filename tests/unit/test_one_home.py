"""Each concept lives in one place: grouping, the metrics training uses, loss names, the checkpoint reader.

These guard against a second copy creeping back in (a copy drifts: the thresholds, the version rule and the
validation scores once existed two or three times with small differences).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from focaltag.errors import CheckpointError, ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "focaltag"


def _python_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_group_thresholds_are_written_once() -> None:
    from focaltag.data import groups

    head, tail = groups.DEFAULT_GROUP_THRESHOLDS
    pattern = re.compile(rf"(?<![\d.]){head}(?![\d.])")
    files = [*_python_files(), *sorted(SRC.rglob("*.yaml")), *sorted(SRC.rglob("*.yml"))]  # shipped configs too
    found = [f"{p.relative_to(SRC)}:{i}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert found == ["data/groups.py:" + str(_line_of(Path(groups.__file__), "HEAD_ABOVE = "))], found


def _line_of(path: Path, prefix: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(prefix))


def test_every_grouping_entry_point_agrees() -> None:
    from focaltag.data.groups import DEFAULT_GROUP_THRESHOLDS, frequency_groups, group_labels
    from focaltag.data.stats import tag_groups as stats_groups
    from focaltag.evaluation.groups import frequency_groups as eval_groups
    from focaltag.experiments.figures import tag_groups as figure_groups

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 1200, size=60)
    counts[:6] = [551, 550, 201, 200, 0, 1200]  # the boundaries
    names = [f"t{i:02d}" for i in range(60)]
    want = frequency_groups(counts, names)
    assert eval_groups(counts, names) == want
    assert figure_groups(counts, DEFAULT_GROUP_THRESHOLDS) == group_labels(counts)
    by_stats = stats_groups(dict(zip(names, counts.tolist(), strict=True)))
    assert {g: sorted(v) for g, v in by_stats.items()} == {g: sorted(v) for g, v in want.items()}
    assert group_labels([551, 550, 201, 200]) == ["head", "middle", "middle", "tail"]


def test_training_validation_scores_are_the_evaluation_metrics() -> None:
    from focaltag.evaluation import pr_auc_macro, roc_auc_macro
    from focaltag.metrics import macro_scores
    from focaltag.training import loop

    assert loop.macro_scores is macro_scores
    rng = np.random.default_rng(1)
    y = (rng.random((200, 12)) < 0.15).astype(np.float32)
    y[:, 4] = 0  # undefined tag: left out of both
    s = rng.random((200, 12)).astype(np.float32)
    scores = macro_scores(y, s)
    assert scores["tags_scored"] == 11
    assert scores["pr_auc"] == pr_auc_macro(y, s)
    assert scores["roc_auc"] == roc_auc_macro(y, s)
    nothing = macro_scores(np.zeros((5, 2)), rng.random((5, 2)))
    assert nothing["tags_scored"] == 0 and np.isnan(nothing["pr_auc"])


def test_loss_names_come_from_one_registry() -> None:
    from focaltag.training import losses
    from focaltag.training.config import LOSS_NAMES, LossConfig
    from focaltag.training.loss_registry import LOSS_LABELS, LOSSES, PAPER_LOSSES

    assert losses.LOSSES is LOSSES and tuple(LOSSES) == LOSS_NAMES
    assert set(LOSS_LABELS) == set(LOSSES) and set(PAPER_LOSSES) <= set(LOSSES)
    for name in LOSSES:
        assert LossConfig(name=name).name == name
        assert isinstance(losses.build_loss(name, class_counts=[5, 3]), torch.nn.Module)
    with pytest.raises(ConfigError, match="loss.name"):
        LossConfig(name="mse")
    # no other module spells out the list of loss names
    quoted = re.compile(r"""["']cb_focal["'].{0,40}["']db_focal["']""")
    hits = [str(p.relative_to(SRC)) for p in _python_files() if quoted.search(p.read_text(encoding="utf-8"))]
    assert hits == ["training/loss_registry.py"], hits


def test_functions_defined_once() -> None:
    defined: dict[str, list[str]] = {}
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name in ("plot_tag_distribution", "macro_scores",
                                                                   "load_checkpoint", "read_checkpoint",
                                                                   "auto_group_thresholds", "frequency_groups",
                                                                   "default_tag_names"):
                defined.setdefault(node.name, []).append(str(path.relative_to(SRC)))
    assert {k: len(v) for k, v in defined.items()} == dict.fromkeys(defined, 1), defined


def test_one_checkpoint_version_rule(tmp_path: Path) -> None:
    from focaltag.models import CHECKPOINT_VERSION, create_model, load_model, model_checkpoint, save_model
    from focaltag.training.checkpoint import CHECKPOINT_FORMAT, load_checkpoint

    assert CHECKPOINT_FORMAT == CHECKPOINT_VERSION
    good = save_model(create_model(width=4, n_tags=3, tag_names=["a", "b", "c"]), tmp_path / "m.pt", epoch=2)
    assert load_checkpoint(good)["epoch"] == 2
    newer = tmp_path / "newer.pt"
    torch.save({**model_checkpoint(create_model(width=4)), "focaltag_checkpoint": CHECKPOINT_VERSION + 1}, newer)
    for reader in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match="newer than this focaltag"):
            reader(newer)
    plain = tmp_path / "plain.pt"
    torch.save({"x": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="not a focaltag training checkpoint"):
        load_checkpoint(plain)


def test_models_and_evaluation_name_unnamed_columns_alike() -> None:
    from focaltag.evaluation.metrics import default_tag_names
    from focaltag.models import create_model

    for n in (12, 56):
        assert create_model(width=4, n_tags=n).pretrained_cfg.tag_names == tuple(default_tag_names(n))
    assert default_tag_names(3) == ("tag_000", "tag_001", "tag_002")

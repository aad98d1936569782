"""Each concept lives in one place: grouping, the metrics training uses, loss names, the checkpoint reader, the
model resolver and its defaults, the ensemble (mean, folder format, weights rule) and the precision rule.

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
                                                                   "default_tag_names", "check_weights",
                                                                   "mean_probabilities",
                                                                   "write_manifest", "member_file", "save_ensemble",
                                                                   "read_ensemble", "is_ensemble_dir",
                                                                   "resolve_model", "cpu_has_fast_bf16",
                                                                   "runs_bf16_fast", "resolve_precision",
                                                                   "autocast"):
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


def _assignments(name: str) -> list[str]:
    """Where a module-level constant ``name`` is assigned (``NAME = ...``) in the package."""
    found = []
    for path in _python_files():
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, ast.AnnAssign) else []
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                found.append(str(path.relative_to(SRC)))
    return found


def test_model_defaults_ensemble_format_and_precision_names_are_defined_once() -> None:
    assert _assignments("DEFAULT_MODEL") == ["_defaults.py"]
    assert _assignments("ENSEMBLE_MANIFEST") == ["models/ensemble.py"]
    assert _assignments("PRECISIONS") == ["precision.py"]
    assert _assignments("TAG_PRECISIONS") == ["inference/precision.py"]
    from focaltag._defaults import DEFAULT_MODEL
    from focaltag.models import catalogue

    assert catalogue.DEFAULT_MODEL is DEFAULT_MODEL and DEFAULT_MODEL in catalogue.catalogue()


def test_no_second_mean_member_file_pattern_or_bf16_check() -> None:
    """The mean is models.ensemble's; member files are named by member_file; bf16 speed is asked of
    focaltag.precision (torch's mkldnn check is true on CPUs that only emulate bf16)."""
    patterns = {
        "member file names": (re.compile(r"member-\{"), {"models/ensemble.py"}),
        "torch's bf16 check": (re.compile(r"_is_mkldnn_bf16_supported\(\)"), set()),
        "bf16 autocast": (re.compile(r"torch\.autocast\([^)]*bfloat16"), {"precision.py"}),
        "a weighted sum of sigmoids": (re.compile(r"\+= *weight *\*|weights\[i\] \* torch\.sigmoid"), set()),
        "a joined precision tested by substring": (re.compile(r'"bf16" (not )?in '), set()),
        "a hand-written first line of an exception (errors.first_line)": (
            re.compile(r"str\((err|exc|e)\)[^\n]{0,20}\.splitlines\(\)(\[0\]| or)"), set()),
        "a POSIX-only file lock (focaltag._locks is the one lock)": (re.compile(r"import fcntl|fcntl\.flock"), set()),
    }
    for what, (pattern, allowed) in patterns.items():
        hits = {str(p.relative_to(SRC)) for p in _python_files() if pattern.search(p.read_text(encoding="utf-8"))}
        assert hits <= allowed, (what, hits)


def test_one_weights_rule_with_one_error_type(tmp_path: Path) -> None:
    import json

    from focaltag.evaluation.ensemble import weighted_ensemble
    from focaltag.models import create_model
    from focaltag.models.ensemble import (
        ENSEMBLE_MANIFEST,
        MeanEnsemble,
        check_weights,
        read_manifest,
        save_ensemble,
    )
    from focaltag.models.resolve import resolve_model

    m = create_model(width=4, n_tags=3, tag_names=["a", "b", "c"])
    assert check_weights([3, 1], 2) == [0.75, 0.25] and check_weights(None, 4) == [0.25] * 4
    save_ensemble(tmp_path / "ens", [m, m], weights=[1.0, 1.0])
    manifest = json.loads((tmp_path / "ens" / ENSEMBLE_MANIFEST).read_text())
    manifest["members"][1]["weight"] = -1
    (tmp_path / "ens" / ENSEMBLE_MANIFEST).write_text(json.dumps(manifest))
    p = np.ones((2, 3))
    for call in (lambda: check_weights([1, -1], 2), lambda: check_weights([1.0], 2),
                 lambda: check_weights([float("nan"), 1], 2), lambda: MeanEnsemble([m, m], [0, 0]),
                 lambda: save_ensemble(tmp_path / "bad", [m, m], weights=[1, -1]),
                 lambda: read_manifest(tmp_path / "ens"), lambda: resolve_model(tmp_path / "ens"),
                 lambda: weighted_ensemble([p, p], [1, -1])):
        with pytest.raises(ConfigError, match="weight"):
            call()


def test_the_mean_is_the_same_for_torch_numpy_and_the_exported_module() -> None:
    from focaltag.models import create_model
    from focaltag.models.ensemble import MeanEnsemble, mean_probabilities

    torch.manual_seed(0)
    members = [create_model(width=4, n_tags=3, tag_names=["a", "b", "c"]).eval() for _ in range(3)]
    x = torch.randn(2, members[0].pretrained_cfg.chunk_samples) * 0.1
    w = [0.5, 0.25, 0.25]
    with torch.no_grad():
        probs = [torch.sigmoid(m(x)) for m in members]
        want = sum(wi * pi.double() for wi, pi in zip(w, probs, strict=True))  # the formula, independently
        as_module = MeanEnsemble(members, [2, 1, 1], output="probabilities")(x)
        logits = MeanEnsemble(members, [2, 1, 1])(x)
    torch.testing.assert_close(as_module.double(), want, rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.sigmoid(logits).double(), want, rtol=0, atol=1e-5)
    as_numpy = mean_probabilities([p.numpy() for p in probs], np.asarray(w))
    np.testing.assert_allclose(as_numpy, want.numpy(), rtol=0, atol=1e-7)


def test_the_one_lock_excludes_a_second_holder_and_is_released(tmp_path: Path) -> None:
    from focaltag._locks import lock_path, locked, try_lock

    target = tmp_path / "out" / "tags.jsonl"
    assert lock_path(target) == tmp_path / "out" / "tags.jsonl.lock"
    with locked(lock_path(target)):
        assert try_lock(lock_path(target)) is None  # held (another handle, as another process)
    first = try_lock(lock_path(target))
    assert first is not None and try_lock(lock_path(target)) is None
    first.release()
    again = try_lock(lock_path(target))
    assert again is not None
    again.release()


def test_first_line_of_an_error() -> None:
    from focaltag.errors import first_line

    assert first_line(ValueError("bad thing\n  at line 3")) == "bad thing"
    assert first_line(ValueError("\n  padded  \nsecond")) == "padded"
    assert first_line(KeyError()) == "KeyError" and first_line(OSError(), default="") == ""
    assert first_line("text only\nmore") == "text only" and first_line("  ") == ""
    assert first_line(RuntimeError("x" * 50), limit=10) == "xxxxxxx..." and len(first_line("y" * 9, limit=10)) == 9

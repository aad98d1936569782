"""Hostile inputs, gathered so that the next change cannot quietly reopen them (issue 22).

Each test reproduces one attack found by an adversarial pass and checks the bounded answer: a config that
expands to gigabytes, a seed outside the RNG's range, a download mirror that lies about sizes or drips bytes,
and clients of ``focaltag serve`` that stall, lie, send malformed multipart or a foreign Host header. Network
tests stay on 127.0.0.1 and are bounded in requests and time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from focaltag.cli import main

LAUGHS = "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9) if p else ', '.join(['lol'] * 9)}]\n"
    for p, c in zip(["", *"abcdefgh"], "abcdefghi", strict=True))


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith("focaltag: error: "), err
    return lines[0]


# -- configs -----------------------------------------------------------------------------------------------
def test_billion_laughs_is_one_error_line_within_a_second(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    from focaltag.config import load_yaml
    from focaltag.errors import ConfigError

    config = tmp_path / "laughs.yaml"
    config.write_text(LAUGHS)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="alias"):
        load_yaml(config)
    assert time.perf_counter() - start < 1.0
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "alias *a is not allowed" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_aliases_in_set_overrides_and_experiments_are_refused(tmp_path: Path) -> None:
    from focaltag.config import parse_override
    from focaltag.errors import ConfigError
    from focaltag.experiments.spec import load_experiment

    assert parse_override("optim={a: &x [1, 2], b: *x}")[1] == "{a: &x [1, 2], b: *x}"  # text, never expanded
    spec = tmp_path / "exp.yaml"
    spec.write_text("base: {seed: &s 1}\nruns:\n  bce: {seed: *s}\n")
    with pytest.raises(ConfigError, match="alias"):
        load_experiment(spec)


@pytest.mark.parametrize("seed", ["-1", "1.0e+23", "4294967296"])
def test_seed_out_of_range_is_refused_at_validation(seed: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"seed: {seed}\n")
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "seed: expected an integer 0 <= seed < 2**32" in _one_error_line(capsys.readouterr().err)


def test_the_largest_seed_is_accepted() -> None:
    from focaltag.training.config import load_train_config

    assert load_train_config(None, [f"seed={2**32 - 1}"]).seed == 2**32 - 1

"""The public API re-exported from ``focaltag``: every advertised name resolves, the CLI has help everywhere."""

from __future__ import annotations

import subprocess
import sys

import pytest

import focaltag
from focaltag.cli import build_parser


@pytest.mark.parametrize("name", sorted(focaltag._LAZY))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(focaltag, name) is not None
    assert name in dir(focaltag)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        focaltag.no_such_thing  # noqa: B018


def _subcommand_paths(parser, prefix=()):
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommand_paths(sub, (*prefix, name))


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = list(_subcommand_paths(build_parser()))
    assert ("data", "synth") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        assert exit_.value.code == 0
        assert "usage: focaltag" in capsys.readouterr().out


def test_version_and_module_entry_point() -> None:
    proc = subprocess.run([sys.executable, "-m", "focaltag", "--version"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"focaltag {focaltag.__version__}"

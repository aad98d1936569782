"""``python -m focaltag`` entry point."""

from focaltag.cli import console

console()

"""``python -m focaltag`` entry point."""

from focaltag.cli import main

raise SystemExit(main())

"""The command line starts without importing torch: ``focaltag --help``, and the commands that need no network
(``similar`` on a library, ``models list``, ``evaluate``), stay fast."""

from __future__ import annotations

import subprocess
import sys


def test_building_the_parser_imports_no_torch() -> None:
    code = ("import sys\nimport focaltag.cli as cli\ncli.build_parser()\n"
            "heavy = sorted(m for m in ('torch', 'onnxruntime', 'librosa') if m in sys.modules)\nprint(heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

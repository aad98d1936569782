# Shared by scripts/demo and scripts/test: create .venv (once) and install focaltag with pinned versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${FOCALTAG_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "focaltag needs Python >= 3.10 (found: $("$PY" --version 2>&1)); set PYTHON=/path/to/python3.x" >&2
  exit 2
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo ">> creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
PIP_ARGS=(-q --disable-pip-version-check -c "$ROOT/constraints/ci.txt")
# The CPU torch wheel: from the local wheel folder when the machine has one, else PyTorch's CPU index.
if [ -d /opt/wheels ]; then
  PIP_ARGS+=(--find-links /opt/wheels)
else
  PIP_ARGS+=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
stamp="$VENV/.focaltag-installed-$(cat "$ROOT/pyproject.toml" "$ROOT/constraints/ci.txt" | cksum | cut -d' ' -f1)$EXTRAS"
if [ ! -f "$stamp" ]; then
  echo ">> installing focaltag${EXTRAS:+[$EXTRAS]} and its pinned dependencies into $VENV"
  "$VENV/bin/python" -m pip install "${PIP_ARGS[@]}" -e "$ROOT${EXTRAS:+[$EXTRAS]}" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"

# Sourced by serve.sh and test.sh: make .venv (Python 3.11) and install the project once per pyproject change.
# Usage: source scripts/bootstrap.sh [EXTRAS]   e.g. "" or "[dev]" or "[dev,clients]"
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CLIPSERVE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"

if [ ! -x "$VENV/bin/python" ]; then
  PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
  "$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), "clipserve needs Python 3.11"'
  echo "creating $VENV with $PYTHON" >&2
  "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)${EXTRAS//[^a-z]/}"
if [ ! -f "$STAMP" ]; then
  echo "installing clipserve${EXTRAS} into $VENV (first run: torch is large, this takes a few minutes)" >&2
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --progress-bar on -e "$ROOT$EXTRAS"
  touch "$STAMP"
fi

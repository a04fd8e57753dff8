#!/usr/bin/env bash
# Set up (first run) and run the test suite. Any pytest arguments may follow (e.g. -m unit).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" "[dev]"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"

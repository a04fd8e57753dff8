#!/usr/bin/env bash
# Set up (first run) and run the test suite. Any pytest arguments may follow (e.g. -m unit).
# The clients extra holds the client libraries of the compatibility matrix (tests/clients, -m clients).
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" "[dev,clients]"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"

#!/usr/bin/env bash
# Set up (first run) and start the server on embedded defaults. Any `clipserve serve` flag may follow.
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh" ""
exec "$VENV/bin/clipserve" serve "$@"

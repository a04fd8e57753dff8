"""Loading the model for a command: the runtime per settings, or one line on stderr saying why not."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from clipserve.config import Settings
from clipserve.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from clipserve.runtime.model import ClipRuntime


def load_runtime(settings: Settings) -> ClipRuntime | None:
    """The model per settings, or None after printing why it could not load."""
    from clipserve.runtime.loader import (
        runtime_from_settings,
    )  # torch and open_clip: only when a command runs

    try:
        return runtime_from_settings(settings)
    except (WeightsUnavailableError, RuntimeError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return None

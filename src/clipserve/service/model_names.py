"""Which `model` names this server answers to."""

from __future__ import annotations

from clipserve.errors import ModelNotFoundError
from clipserve.model_card import HUB_ID, is_served_model

# what Infinity's clients send when the caller names no model; Infinity answers with its first model
UNSPECIFIED = "default/not-specified"


def resolve_model_name(requested: str | None) -> str:
    """The canonical id for a requested model name; omitted means the served model."""
    if requested is None or requested == UNSPECIFIED or is_served_model(requested):
        return HUB_ID
    raise ModelNotFoundError(
        f"The model '{requested}' does not exist on this server; it serves '{HUB_ID}'", param="model"
    )

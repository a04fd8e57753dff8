"""Which `model` names this server answers to."""

from __future__ import annotations

from clipserve.errors import ModelNotFoundError
from clipserve.model_card import HUB_ID, is_served_model


def resolve_model_name(requested: str | None) -> str:
    """The canonical id for a requested model name; omitted means the served model."""
    if requested is None or is_served_model(requested):
        return HUB_ID
    raise ModelNotFoundError(
        f"The model '{requested}' does not exist on this server; it serves '{HUB_ID}'", param="model"
    )

"""Command-line flags generated from Settings, so CLI, env vars and docs never drift."""

from __future__ import annotations

import argparse
import typing
from collections.abc import Sequence
from typing import Any

from clipserve.config import Settings

# The settings every command that loads the model takes (serve takes all of them).
MODEL_SETTINGS = (
    "data_dir", "weights", "model_cache_dir", "random_seed", "architecture", "device", "torch_threads",
    "decode_workers", "max_image_pixels", "truncate_text", "precision",
)  # fmt: skip


def add_settings_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One --flag per Settings field; unset flags fall back to CLIPSERVE_* env vars, then defaults."""
    for name, field in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = f"CLIPSERVE_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} [env {env}; default {default!s}]"
        annotation = field.annotation
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is list:
            kwargs.update(action="append", metavar="VALUE")
        else:
            choices = _literal_choices(annotation)
            if choices:
                kwargs["choices"] = choices
            kwargs["metavar"] = name.split("_")[-1].upper() if not choices else None
        parser.add_argument(flag, **kwargs)


def _literal_choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(**overrides)

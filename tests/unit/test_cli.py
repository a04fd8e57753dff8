from __future__ import annotations

from pathlib import Path

import pytest

from clipserve.cli.main import build_parser
from clipserve.cli.settings_args import settings_from_args
from clipserve.config import Settings


def settings_for(argv: list[str]) -> Settings:
    return settings_from_args(build_parser().parse_args(["serve", *argv]))


def test_defaults_serve_the_hub_model_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(f"CLIPSERVE_{name.upper()}", raising=False)
    settings = settings_for([])
    assert settings.weights == "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.resolved_model_cache_dir == settings.data_dir / "models"


def test_flags_beat_environment_which_beats_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLIPSERVE_PORT", "9001")
    monkeypatch.setenv("CLIPSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CLIPSERVE_WEIGHTS", "random")
    from_env = settings_for([])
    assert (from_env.port, from_env.data_dir, from_env.weights) == (9001, tmp_path, "random")
    from_flags = settings_for(["--port", "9002", "--weights", "/w.safetensors", "--host", "0.0.0.0"])
    assert (from_flags.port, from_flags.weights, from_flags.host) == (9002, "/w.safetensors", "0.0.0.0")


def test_booleans_lists_and_choices_parse() -> None:
    settings = settings_for(
        ["--image-fetch-allow-private", "--image-fetch-allowed-networks", "10.0.0.0/8",
         "--image-fetch-allowed-networks", "192.168.0.0/16", "--device", "cpu"]
    )  # fmt: skip
    assert settings.image_fetch_allow_private is True
    assert settings.image_fetch_allowed_networks == ["10.0.0.0/8", "192.168.0.0/16"]
    assert settings.device == "cpu"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--device", "tpu"])


def test_a_queue_smaller_than_a_request_is_refused() -> None:
    with pytest.raises(ValueError, match="max_queue_items"):
        Settings(max_queue_items=10, max_items_per_request=20)

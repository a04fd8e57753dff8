"""Shared fixtures. Tests are marked by folder: unit, api, parity, system (`pytest -m unit` runs the fast ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import PHOTO_FILES, TINY_CONFIG, photo_path

TESTS = Path(__file__).parent
FOLDER_MARKS = ("unit", "api", "parity", "system")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(TESTS).parts
        if parts and parts[0] in FOLDER_MARKS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def photos() -> dict[str, bytes]:
    """Real photos shipped with scikit-image, as file bytes."""
    return {name: photo_path(name).read_bytes() for name in PHOTO_FILES}


@pytest.fixture(scope="session")
def tiny_runtime():  # type: ignore[no-untyped-def]
    """A tiny CLIP (2 layers per tower, 512-d output) with seeded random weights."""
    from clipserve.runtime.model import ClipRuntime, RuntimeSpec

    return ClipRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", seed=0)
    )

"""Shared fixtures. Tests are marked by folder: unit, api, parity, system, browser (`pytest -m unit` runs the fast ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import PHOTO_FILES, TINY_CONFIG, photo_path

TESTS = Path(__file__).parent
FOLDER_MARKS = ("unit", "api", "parity", "system", "browser")


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


@pytest.fixture(scope="session")
def postgres_admin_url():  # type: ignore[no-untyped-def]
    """A real PostgreSQL server for this test session (skips if PostgreSQL is not installed)."""
    from tests.postgres_server import postgres_server

    with postgres_server() as url:
        yield url


_database_counter = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty accounts database URL, on each backend: SQLite in a temp dir, and a fresh Postgres database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'clipserve.db'}"
    from tests.postgres_server import fresh_database

    admin_url = request.getfixturevalue("postgres_admin_url")
    return fresh_database(admin_url, f"clipserve_test_{next(_database_counter)}")


@pytest.fixture
def database(database_url: str):  # type: ignore[no-untyped-def]
    from clipserve.store.database import Database

    db = Database(database_url)
    db.migrate()
    yield db
    db.close()

"""Fixtures of the API tests: the adversarial suite's servers, each started once per module."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.hostile_app import HostileServer, hostile_server


@pytest.fixture(scope="module")
def auth_server(tiny_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    """The real app with keys required: a user key with plenty of credit and an admin key."""
    with hostile_server(tiny_runtime, tmp_path_factory.mktemp("hostile-auth"), "auth") as server:
        yield server


@pytest.fixture(scope="module")
def local_server(tiny_runtime: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileServer]:
    """The real app in local mode (auth off: nobody is checked or charged)."""
    with hostile_server(tiny_runtime, tmp_path_factory.mktemp("hostile-local"), "local") as server:
        yield server


@pytest.fixture(scope="module", params=["auth", "local"])
def any_server(request: pytest.FixtureRequest) -> HostileServer:
    """Each of the two servers in turn."""
    server: HostileServer = request.getfixturevalue(f"{request.param}_server")
    return server

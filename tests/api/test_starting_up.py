"""When the 503 `service_unavailable` "starting up" is given (api.md, errors table): to a request that reaches the
app before its start-up (the lifespan that opens the database and starts the services) has run. `clipserve serve`
accepts connections only after that start-up, and a request during the model's warm-up waits and is answered
(tests/api/test_ops_api.py), so this is the in-process app before its lifespan, as here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from clipserve.api.app import create_app
from tests.support import make_settings

pytestmark = pytest.mark.anyio

STARTING_UP = {
    "message": "the service is starting up; retry shortly",
    "type": "server_error",
    "param": None,
    "code": "service_unavailable",
}


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/embeddings", {"input": "a cat"}),
        ("POST", "/v1/classify", {"input": "a cat", "labels": ["cat", "dog"]}),
        ("GET", "/v1/collections", None),
    ],
)
async def test_a_request_before_start_up_is_a_503_starting_up(
    tiny_runtime: Any, tmp_path: Path, method: str, path: str, body: Any
) -> None:
    app = create_app(make_settings(tmp_path), tiny_runtime)  # its lifespan has not run
    transport = httpx.ASGITransport(app=app)  # runs no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://clipserve.test") as client:
        response = await client.request(method, path, json=body)
        ready = await client.get("/ready")
    assert response.status_code == 503, response.text
    assert response.json() == {"error": STARTING_UP}
    assert ready.status_code == 503

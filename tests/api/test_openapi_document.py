"""The OpenAPI document says what the server does: no 422 (validation errors are 400 OpenAI error objects),
each operation's error statuses with the OpenAI error schema, and a bearer security scheme on keyed routes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from clipserve.api.app import create_app
from tests.support import bearer, create_key, make_settings, running_app

pytestmark = pytest.mark.anyio

MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
ERROR_REF = "#/components/schemas/ErrorResponse"
OPEN_ROUTES = {"/health", "/ready", "/v1/signup"}  # answered without a key


@pytest.fixture
def document(tiny_runtime: Any, tmp_path: Path) -> dict[str, Any]:
    app = create_app(make_settings(tmp_path), tiny_runtime)
    schema: dict[str, Any] = app.openapi()
    return schema


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def test_no_operation_lists_a_422_or_fastapis_validation_schema(document: dict[str, Any]) -> None:
    text = json.dumps(document)
    assert '"422"' not in text
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in document["components"]["schemas"]


def test_every_error_response_is_the_openai_error_object(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["ErrorResponse"]
    detail_ref = error["properties"]["error"]["$ref"].rsplit("/", 1)[1]
    detail = document["components"]["schemas"][detail_ref]
    assert set(detail["properties"]) == {"message", "type", "param", "code"}
    checked = 0
    for path, _method, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path, status) == ("/ready", "503"):  # /ready's 503 is its health body
                continue
            assert response["content"]["application/json"]["schema"] == {"$ref": ERROR_REF}, (path, status)
            assert response["description"], (path, status)
            checked += 1
    assert checked > 100


def test_each_operation_lists_the_statuses_its_route_can_answer(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        statuses = {int(s) for s in operation["responses"]}
        where = f"{method.upper()} {path}: {sorted(statuses)}"
        assert {408, 413, 503} <= statuses, where  # the server, the body cap and shutdown: any route
        if path not in OPEN_ROUTES:
            assert {401, 429} <= statuses, where
        if path.startswith("/v1/admin"):
            assert 403 in statuses, where
        if "{" in path:
            assert 404 in statuses, where
        if "requestBody" in operation or operation.get("parameters"):
            assert 400 in statuses, where
    models = document["paths"]["/v1/models/{model_id}"]["get"]["responses"]
    assert {"200", "401", "404", "429", "503"} <= set(models)
    embeddings = document["paths"]["/v1/embeddings"]["post"]["responses"]
    assert {"200", "400", "401", "409", "413", "429", "503"} <= set(embeddings)


def test_a_bearer_scheme_guards_exactly_the_keyed_routes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert list(schemes.values()) == [{**schemes["apiKey"], "type": "http", "scheme": "bearer"}]
    for path, method, operation in operations(document):
        if path in OPEN_ROUTES:
            assert "security" not in operation, path
        else:
            assert operation["security"] == [{"apiKey": []}], f"{method} {path}"


async def test_the_statuses_the_server_answers_are_the_documented_ones(tiny_runtime, tmp_path: Path) -> None:
    """Provoke each kind of refusal for real and find it in that operation's responses, in the error shape."""
    admin = create_key(tmp_path, "admin", is_admin=True)
    user = create_key(tmp_path, "user")
    async with running_app(tiny_runtime, tmp_path, auth="on", max_request_bytes=2_000_000) as (client, app):
        documented = app.openapi()["paths"]
        answers = [
            ("/v1/embeddings", "post", await client.post("/v1/embeddings", json={"input": "x", "model": MODEL})),
            ("/v1/embeddings", "post", await client.post(
                "/v1/embeddings", json={"input": "x", "model": MODEL, "dimensions": -1}, headers=bearer(user)
            )),
            ("/v1/embeddings", "post", await client.post(
                "/v1/embeddings", content=b"x" * 2_000_001,
                headers={**bearer(user), "content-type": "application/json"},
            )),
            ("/v1/models/{model_id}", "get", await client.get("/v1/models/no-such-model", headers=bearer(user))),
            ("/v1/admin/accounts", "get", await client.get("/v1/admin/accounts", headers=bearer(user))),
            ("/v1/admin/accounts", "get", await client.get("/v1/admin/accounts", headers=bearer(admin))),
        ]  # fmt: skip
    seen = {response.status_code for _, _, response in answers}
    assert seen == {200, 400, 401, 403, 404, 413}, seen
    for path, method, response in answers:
        assert str(response.status_code) in documented[path][method]["responses"], (
            path,
            response.status_code,
        )
        if response.status_code >= 400:
            assert set(response.json()["error"]) == {"message", "type", "param", "code"}

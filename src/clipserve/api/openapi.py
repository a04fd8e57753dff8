"""The OpenAPI document as the server behaves, so generated clients and schemathesis see what it answers.

FastAPI's own document shows a 422 `HTTPValidationError` on every route with parameters, no request body for
routes that read theirs through JsonBody, and no security. Here, on top of it:
- the bodies JsonBody reads (api/bodies.py);
- no 422 anywhere: validation errors are 400 OpenAI error objects (api/errors.py);
- on every operation, each error status it can answer, with the OpenAI error schema, found from what the route
  runs: every route can answer 408/413/503 (server and middleware); a route with parameters or a body 400;
  one that takes a key 401 and 429; an admin route 403; a route with a path parameter 404;
- a bearer security scheme (Swagger UI's Authorize button), required by the routes that take a key.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic.json_schema import models_json_schema

from clipserve.api.auth import get_admin, get_caller
from clipserve.api.bodies import add_request_bodies, api_routes, dependency_calls
from clipserve.api.protocol import ErrorResponse

ERROR_SCHEMA = "ErrorResponse"
ERROR_REF = f"#/components/schemas/{ERROR_SCHEMA}"
SECURITY_SCHEME = "apiKey"
ERROR_DESCRIPTIONS = {
    400: "Invalid request: a malformed body, a value out of range, or an input that cannot be used",
    401: "No API key, or one that is unknown, revoked or expired",
    403: "The key may not do this (admin routes need an admin key)",
    404: "No such model, collection or item",
    408: "The request's headers or body did not arrive in time",
    413: "The request body (or its JSON) is over this server's limits",
    429: "A rate limit or the account's credit ran out; Retry-After says when to retry",
    503: "Starting up, overloaded or shutting down; Retry-After says when to retry",
}
EVERY_ROUTE = (408, 413, 503)
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


def install_openapi(app: FastAPI) -> None:
    """Replace app.openapi with FastAPI's document made true (see the module doc); built once, then cached."""
    generate = app.openapi
    described: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        if not described:
            schema = generate()
            add_request_bodies(app, schema)
            _describe_errors_and_security(app, schema)
            described.update(schema)
        return described

    app.openapi = openapi  # type: ignore[method-assign]


def _describe_errors_and_security(app: FastAPI, schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    if ERROR_SCHEMA not in schemas:
        _, definitions = models_json_schema(
            [(ErrorResponse, "serialization")], ref_template="#/components/schemas/{model}"
        )
        for name, definition in definitions.get("$defs", {}).items():
            schemas.setdefault(name, definition)
    keyed_anywhere = False
    for path, methods, route in api_routes(app):
        calls = dependency_calls(route.dependant)
        keyed, admin = get_caller in calls, get_admin in calls
        keyed_anywhere |= keyed
        for method in methods:
            operation = schema.get("paths", {}).get(path, {}).get(method.lower())
            if operation is None:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            responses.pop("422", None)
            statuses = set(EVERY_ROUTE)
            if operation.get("parameters") or operation.get("requestBody"):
                statuses.add(400)
            if keyed:
                statuses |= {401, 429}
                operation["security"] = [{SECURITY_SCHEME: []}]
            if admin:
                statuses.add(403)
            if "{" in path:
                statuses.add(404)
            for status in sorted(statuses):
                _document_error(responses, status)
    for name in FASTAPI_VALIDATION_SCHEMAS:
        if f'"#/components/schemas/{name}"' not in json.dumps(schema.get("paths", {})):
            schemas.pop(name, None)
    if keyed_anywhere:
        components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`clipserve keys create`), sent as `Authorization: Bearer sk-...`. "
            "Needed when keys are required (--auth on, or auto once a key exists).",
        }


def _document_error(responses: dict[str, Any], status: int) -> None:
    """The OpenAI error object for `status`; a route's own wording of it (responses=...) is kept."""
    entry = responses.setdefault(str(status), {})
    if entry.get("description") in (None, "", HTTPStatus(status).phrase):
        entry["description"] = ERROR_DESCRIPTIONS[status]
    content = entry.setdefault("content", {}).setdefault("application/json", {})
    content.setdefault("schema", {"$ref": ERROR_REF})

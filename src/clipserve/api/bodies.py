"""JSON request bodies: read only after the caller is known, capped, parsed and validated off the event loop.

Routes take their body as a dependency, `body: Annotated[EmbeddingRequest, Depends(JsonBody(EmbeddingRequest))]`,
instead of letting FastAPI read and parse it before any dependency (auth included) runs:

- the caller is authenticated first, so a request without a valid key gets its 401 before a byte of its
  body is read; routes that take no key (sign-up) read at most max_unauthenticated_body_bytes;
- bodies over json_inline_parse_bytes are parsed (api/json_limits.py: keys, strings, values and depth are
  capped before any Python object is built) and validated in a worker thread; small ones inline.
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Generic, TypeVar

import fastapi.routing
from fastapi import Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.requests import ClientDisconnect

from clipserve.api.auth import get_authenticator, get_caller
from clipserve.api.dependencies import get_context
from clipserve.api.json_limits import JsonBodyParser, parse_json
from clipserve.errors import (
    ClientDisconnectedError,
    InvalidJsonError,
    RequestTooLargeError,
    ServiceUnavailableError,
)
from clipserve.service.auth import Authenticator, Caller

Model = TypeVar("Model", bound=BaseModel)
T = TypeVar("T")
ModelChoice = type[Model] | Callable[[dict[str, Any]], type[Model]]


class JsonBody(Generic[Model]):
    """A dependency for authenticated routes: the caller first (401 without reading), then the body.

    `model` is the wire model, or a function that picks it from the parsed object (classify's two shapes);
    `documented` are the models the OpenAPI schema shows for the body (default: `model`).
    """

    def __init__(self, model: ModelChoice[Model], documented: Sequence[type[BaseModel]] = ()) -> None:
        self.model = model
        self.documented = tuple(documented) or ((model,) if isinstance(model, type) else ())

    async def __call__(self, request: Request, caller: Annotated[Caller, Depends(get_caller)]) -> Model:
        context = get_context(request)
        if context.meter is not None:
            await context.meter.refuse_if_limited(
                caller
            )  # a key refused for its rate: 429 before the body is read
        return await read_model(request, self.model, context.settings.max_request_bytes, caller.account)


class PublicJsonBody(JsonBody[Model]):
    """A dependency for routes that take no key (sign-up): the small cap once authentication is required."""

    async def __call__(  # type: ignore[override]
        self, request: Request, authenticator: Annotated[Authenticator, Depends(get_authenticator)]
    ) -> Model:
        settings = get_context(request).settings
        required = await authenticator.auth_required()
        limit = settings.max_unauthenticated_body_bytes if required else settings.max_request_bytes
        client = request.client
        return await read_model(request, self.model, limit, f"address:{client.host if client else '?'}")


async def read_model(request: Request, model: ModelChoice[Model], limit: int, tenant: str) -> Model:
    """Read the body (at most `limit` bytes), parse it within the JSON limits and validate it as `model`; a
    large body on the JSON threads in `tenant`'s turn (kept for the route's per-item parsing too)."""
    _require_json_content_type(request)
    chunks, size = await _read_chunks(request, limit)
    parser = get_context(request).body_parser
    if parser is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    if size <= parser.inline_bytes:
        body, value = _parse_and_validate(chunks, model, parser)
    else:
        body, value = await parser.run(lambda: _parse_and_validate(chunks, model, parser), tenant)
    request.state.json_tenant = tenant
    # Request.body() (the Idempotency-Key fingerprint) reads this instead of the consumed stream.
    request._body = body
    return value


async def parse_off_the_loop(request: Request, work: Callable[[], T]) -> T:
    """Run a route's per-item parsing of its body where a large body was parsed (the JSON threads), so the
    event loop never walks thousands of items; a small body's items are parsed inline."""
    parser = get_context(request).body_parser
    if parser is None or len(getattr(request, "_body", b"")) <= parser.inline_bytes:
        return work()
    return await parser.run(work, getattr(request.state, "json_tenant", None))


def validate_body(model: type[Model], body: dict[str, Any]) -> Model:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc


def _require_json_content_type(request: Request) -> None:
    value = request.headers.get("content-type")
    if value:
        message = email.message.Message()
        message["content-type"] = value
        subtype = message.get_content_subtype()
        if message.get_content_maintype() == "application" and (
            subtype == "json" or subtype.endswith("+json")
        ):
            return
    raise InvalidJsonError("request body must be a JSON object (send Content-Type: application/json)")


async def _read_chunks(request: Request, limit: int) -> tuple[list[bytes], int]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLargeError(f"request body is {declared} bytes; the limit here is {limit}")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLargeError(f"request body is over the {limit}-byte limit here")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise ClientDisconnectedError("the client closed the connection before its body arrived") from exc
    return chunks, size


def _parse_and_validate(
    chunks: Sequence[bytes], model: ModelChoice[Model], parser: JsonBodyParser
) -> tuple[bytes, Model]:
    body = b"".join(chunks)
    if not body or body.isspace():
        raise InvalidJsonError("request body is empty: send a JSON object")
    data = parse_json(body, parser.limits)
    if not isinstance(data, dict):
        raise InvalidJsonError("request body must be a JSON object")
    chosen = model if isinstance(model, type) else model(data)
    return body, validate_body(chosen, data)


def dependency_calls(dependant: Dependant) -> list[Any]:
    """Every dependency a route runs, nested ones too (what it reads and checks before the handler)."""
    calls: list[Any] = []
    for dependency in dependant.dependencies:
        calls.append(dependency.call)
        calls.extend(dependency_calls(dependency))
    return calls


def api_routes(app: FastAPI) -> list[tuple[str, set[str], APIRoute]]:
    """(full path, methods, route) of every API route, included routers too (FastAPI >= 0.116 nests them)."""
    iterate = getattr(fastapi.routing, "iter_route_contexts", None)
    found: list[tuple[str, set[str], APIRoute]] = []
    for context in iterate(app.routes) if iterate is not None else app.routes:
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute):
            path = getattr(context, "path_format", None) or route.path_format
            found.append((path, getattr(context, "methods", None) or route.methods or set(), route))
    return found


def add_request_bodies(app: FastAPI, schema: dict[str, Any]) -> None:
    """Show the bodies routes read through JsonBody in the OpenAPI schema (FastAPI sees no body parameter)."""
    bodies: dict[tuple[str, str], tuple[type[BaseModel], ...]] = {}
    for path, methods, route in api_routes(app):
        for call in dependency_calls(route.dependant):
            if isinstance(call, JsonBody) and call.documented:
                for method in methods:
                    bodies[(path, method.lower())] = call.documented
    models = sorted({m for documented in bodies.values() for m in documented}, key=lambda m: m.__name__)
    _, definitions = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in definitions.get("$defs", {}).items():
        components.setdefault(name, definition)
    for (path, method), documented in bodies.items():
        operation = schema.get("paths", {}).get(path, {}).get(method)
        if operation is None:
            continue
        refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in documented]
        operation.setdefault(
            "requestBody",
            {
                "content": {"application/json": {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}},
                "required": True,
            },
        )

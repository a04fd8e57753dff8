"""Run an endpoint's work under metering: admit, answer (or replay), charge once; free when it fails."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request, Response

from clipserve.api.auth import CallerDep
from clipserve.api.dependencies import get_context
from clipserve.errors import InvalidRequestError, ServiceUnavailableError
from clipserve.service.auth import Caller
from clipserve.service.pricing import Usage
from clipserve.store.ledger import StoredResponse

IDEMPOTENCY_HEADER = "idempotency-key"
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
JSON = "application/json"


@dataclass(frozen=True)
class Answer:
    """What an endpoint produced: the body, the usage it is charged for, and its own headers."""

    body: str
    usage: Usage
    headers: dict[str, str] = field(default_factory=dict)


async def metered_response(
    request: Request, caller: Caller, bound: Usage, produce: Callable[[], Awaitable[Answer]]
) -> Response:
    """`produce` runs only if the caller may pay `bound`; its exact usage is charged once it has succeeded."""
    if caller.is_local:
        answer = await produce()
        return Response(answer.body, media_type=JSON, headers=answer.headers)
    meter = get_context(request).meter
    if meter is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    idempotency_key = _idempotency_key(request)
    fingerprint = await _fingerprint(request) if idempotency_key is not None else None
    route = request.scope.get("route")
    endpoint = getattr(route, "path", request.url.path)  # the template: no collection names in the ledger
    metered = await meter.admit(
        caller, request.state.request_id, endpoint, bound, idempotency_key, fingerprint
    )
    # The middleware adds these to whatever answer goes out, errors included.
    request.state.response_headers = metered.headers
    if metered.replay is not None:
        replay = metered.replay
        return Response(
            replay.body,
            status_code=replay.status_code,
            media_type=replay.media_type,
            headers={"idempotent-replayed": "true"},
        )
    try:
        answer = await produce()
        body = answer.body.encode()
        cost = await metered.settle(answer.usage, StoredResponse(200, JSON, body))
    finally:
        await metered.release()  # no-op once settled
    get_context(request).metrics.charged_micros.labels(endpoint).inc(cost)
    return Response(body, media_type=JSON, headers={**answer.headers, "x-request-cost-micros": str(cost)})


async def admit_free_request(request: Request, caller: Caller) -> None:
    """Count a request that costs nothing (collection and item management, account reads) against the key's
    per-minute request limit, before it does any work; raises RateLimitExceededError (429) beyond it."""
    if caller.is_local:
        return
    meter = get_context(request).meter
    if meter is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    # The middleware adds these to whatever answer goes out, errors included.
    request.state.response_headers = await meter.admit_free(caller)


async def get_free_caller(request: Request, caller: CallerDep) -> Caller:
    """The caller of a route that is not metered, counted against its key's request rate."""
    await admit_free_request(request, caller)
    return caller


# For routes that cost nothing: authenticated and counted against the key's requests per minute.
FreeCallerDep = Annotated[Caller, Depends(get_free_caller)]


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.match(value):
        raise InvalidRequestError(
            "Idempotency-Key must be 1 to 255 visible ASCII characters", param="Idempotency-Key"
        )
    return value


async def _fingerprint(request: Request) -> str:
    """What makes two requests 'the same' for an Idempotency-Key: method, path and exact body."""
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    digest.update(await request.body())
    return digest.hexdigest()

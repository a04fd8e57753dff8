"""Per-request context as plain ASGI middleware: request id, body-size cap, total time, metrics, weight warnings."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clipserve.api.errors import error_response
from clipserve.errors import RequestTooLargeError, ServiceUnavailableError
from clipserve.metrics import ServiceMetrics

logger = logging.getLogger(__name__)
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServiceMetrics,
        max_body_bytes: int,
        extra_headers: Sequence[tuple[str, str]] = (),
        larger_bodies: Mapping[str, int] | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.larger_bodies = dict(larger_bodies or {})  # path -> its own cap (file uploads)
        self.extra_headers = list(extra_headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = MutableHeaders(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _CLIENT_REQUEST_ID.match(incoming) else f"req_{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        status_sent = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status, status_sent = message["status"], True
                out = MutableHeaders(scope=message)
                out["x-request-id"] = request_id
                out["x-total-time-ms"] = f"{(time.perf_counter() - started) * 1000:.1f}"
                for name, value in self.extra_headers:
                    out[name] = value
                # set by the route, e.g. the x-ratelimit-* headers, which go on errors too
                for name, value in scope["state"].get("response_headers", {}).items():
                    out[name] = value
            await send(message)

        limit = self.larger_bodies.get(scope["path"], self.max_body_bytes)
        try:
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                too_large = error_response(
                    413,
                    f"request body is {declared} bytes; the limit is {limit}",
                    "invalid_request_error",
                    code="request_too_large",
                )
                await too_large(scope, receive, send_with_headers)
                return
            await self.app(scope, self._capped(receive, limit), send_with_headers)
        except asyncio.CancelledError:
            # The server cancels what still runs when the graceful-shutdown period ends: say so (503,
            # retry elsewhere or later) instead of the server's bare 500. The task ends here either way.
            if status_sent:
                raise
            logger.warning("request %s was still running when shutdown ended: answered 503", request_id)
            error = ServiceUnavailableError("the server is shutting down; retry the request", retry_after_s=5)
            unavailable = error_response(
                error.status_code, error.message, error.error_type, code=error.code,
                headers={**error.headers, "Connection": "close"},
            )  # fmt: skip
            await unavailable(scope, receive, send_with_headers)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)

    def _capped(self, receive: Receive, limit: int) -> Receive:
        """A receive that fails once a chunked body grows past the cap."""
        seen = 0

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise RequestTooLargeError(f"request body is over the {limit}-byte limit")
            return message

        return capped_receive

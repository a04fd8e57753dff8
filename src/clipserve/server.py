"""uvicorn's HTTP protocol with the timeouts and the connection cap it lacks (slowloris, descriptor exhaustion).

uvicorn arms no timer before a request's headers are complete, and any byte cancels its keep-alive timer: a
client that trickles its headers (or a body) one byte every few seconds holds a connection, and a descriptor,
forever. This protocol closes a connection whose headers are not complete within http_header_timeout_s of
its opening (or of the first byte after an answer, blank lines included), whose body pauses longer than
http_body_idle_timeout_s or takes longer than http_body_timeout_s in all (while the server is reading it: a
paused read is the server's doing), and refuses connections beyond http_max_connections at once, so the descriptors left are bounded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from clipserve.config import Settings
from clipserve.errors import ClipserveError, RequestTimeoutError, ServiceOverloadedError


def _raw_response(error: ClipserveError) -> bytes:
    """A complete HTTP/1.1 response in the OpenAI error shape, for when no ASGI request is running."""
    body = json.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        }
    ).encode()
    reason = {408: "Request Timeout", 503: "Service Unavailable"}.get(error.status_code, "Error")
    headers = {**error.headers, "Content-Type": "application/json", "Content-Length": str(len(body))}
    headers["Connection"] = "close"
    head = f"HTTP/1.1 {error.status_code} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


_HEADER_TIMEOUT = _raw_response(
    RequestTimeoutError("the request's headers did not arrive in time", code="header_timeout")
)
_TOO_MANY_CONNECTIONS = _raw_response(
    ServiceOverloadedError("the server has too many open connections; retry shortly", retry_after_s=1)
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with header and body timeouts and a cap on open connections (see module doc)."""

    header_timeout_s = 10.0
    body_idle_timeout_s = 15.0
    body_timeout_s = 120.0
    max_connections = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._in_headers = False
        self._in_body = False
        self._body_started = 0.0
        self._last_data = 0.0

    @classmethod
    def configured(cls, settings: Settings) -> type[GuardedHttpProtocol]:
        """This protocol with the settings' limits (uvicorn builds protocols from a class, without arguments)."""
        return cast(
            type[GuardedHttpProtocol],
            type(
                cls.__name__,
                (cls,),
                {
                    "header_timeout_s": settings.http_header_timeout_s,
                    "body_idle_timeout_s": settings.http_body_idle_timeout_s,
                    "body_timeout_s": settings.http_body_timeout_s,
                    "max_connections": settings.http_max_connections,
                },
            ),
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.max_connections:
            # Before super(): this connection is never counted, read or handed to the app.
            transport.write(_TOO_MANY_CONNECTIONS)
            transport.close()
            return
        super().connection_made(transport)
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        if self.transport is not None:  # None when refused in connection_made
            super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_data = self.loop.time()
        if self._deadline is None and self._idle():
            # The first byte after an answer (uvicorn cancels its keep-alive timer on any byte) starts the
            # header deadline. The parser skips blank lines between requests without beginning a message, so
            # on_message_begin alone let "\r\n" every few seconds hold the connection forever.
            self._await_headers()
        super().data_received(data)

    def _idle(self) -> bool:
        """Between requests: not inside headers or a body, and no answer of ours under way."""
        return (
            not self._in_headers
            and not self._in_body
            and (self.cycle is None or self.cycle.response_complete)
        )

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_headers:  # a later request on a kept-alive connection
            self._await_headers()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        self._cancel_deadline()
        super().on_headers_complete()
        # The body, if any, now has to arrive in time (on_message_complete, right after, if there is none).
        self._in_body = True
        self._body_started = self._last_data = self.loop.time()
        self._deadline = self.loop.call_later(self.body_idle_timeout_s, self._check_body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._cancel_deadline()
        super().on_message_complete()

    def _await_headers(self) -> None:
        self._in_headers = True
        self._cancel_deadline()
        self._deadline = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:  # no answer of ours is under way
            self.transport.write(_HEADER_TIMEOUT)
        self.transport.close()

    def _check_body(self) -> None:
        self._deadline = None
        if not self._in_body or self.transport.is_closing():
            return
        now = self.loop.time()
        if (
            self.flow.read_paused
        ):  # the server is not reading (the app has not asked yet): not the client's fault
            self._last_data = now
        idle = now - self._last_data
        if idle >= self.body_idle_timeout_s or now - self._body_started >= self.body_timeout_s:
            # The app, if it is reading, sees the client disconnect; nothing reads an answer now.
            self.transport.close()
            return
        until_idle = self.body_idle_timeout_s - idle
        until_total = self.body_timeout_s - (now - self._body_started)
        self._deadline = self.loop.call_later(max(0.01, min(until_idle, until_total)), self._check_body)

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

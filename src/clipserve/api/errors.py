"""The one place errors become OpenAI error objects: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from clipserve.api.protocol import ErrorDetail, ErrorResponse
from clipserve.errors import ClipserveError

logger = logging.getLogger(__name__)

_HTTP_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    429: "rate_limit_error",
}


def error_response(
    status: int, message: str, error_type: str, *, param: str | None = None, code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:  # fmt: skip
    body = ErrorResponse(error=ErrorDetail(message=message, type=error_type, param=param, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _from_clipserve(exc: ClipserveError) -> JSONResponse:
    return error_response(
        exc.status_code, exc.message, exc.error_type, param=exc.param, code=exc.code, headers=exc.headers
    )


async def handle_clipserve_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ClipserveError)
    return _from_clipserve(exc)


async def handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _from_validation(exc)


def _from_validation(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        return error_response(
            400, "request body is not valid JSON", "invalid_request_error", code="invalid_json"
        )
    if not loc and first.get("type") in ("model_attributes_type", "dict_type"):
        return error_response(
            400, "request body must be a JSON object (send Content-Type: application/json)",
            "invalid_request_error", code="invalid_json",
        )  # fmt: skip
    param = ".".join(loc) or None
    where = f" at '{param}'" if param else ""
    message = f"{first.get('msg', 'invalid value')}{where}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem(s))"
    return error_response(400, message, "invalid_request_error", param=param, code="invalid_value")


async def handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(
        exc.__cause__, ClipserveError
    ):  # e.g. body over the size cap, raised while FastAPI reads it
        return _from_clipserve(exc.__cause__)
    if exc.status_code == 404:
        message = f"Invalid URL ({request.method} {request.url.path})"
    else:
        message = str(exc.detail)
    error_type = _HTTP_TYPES.get(
        exc.status_code, "invalid_request_error" if exc.status_code < 500 else "server_error"
    )
    return error_response(exc.status_code, message, error_type, headers=getattr(exc, "headers", None))


async def handle_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    return _unexpected(exc, getattr(request.state, "request_id", "-"))


def _unexpected(exc: Exception, request_id: str) -> JSONResponse:
    logger.exception("unhandled error in request %s", request_id, exc_info=exc)
    return error_response(
        500, f"internal server error (request id {request_id})", "server_error", code="internal_error"
    )


def error_answer(exc: Exception, request_id: str) -> tuple[int, dict[str, Any]]:
    """The status code and OpenAI error body an online request failing with `exc` gets (a batch line's answer):
    the same rendering as the handlers below."""
    if isinstance(exc, ClipserveError):
        response = _from_clipserve(exc)
    elif isinstance(exc, RequestValidationError):
        response = _from_validation(exc)
    else:
        response = _unexpected(exc, request_id)
    body: dict[str, Any] = json.loads(bytes(response.body))
    return response.status_code, body


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClipserveError, handle_clipserve_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
    app.add_exception_handler(StarletteHTTPException, handle_http_exception)
    app.add_exception_handler(Exception, handle_unexpected_error)

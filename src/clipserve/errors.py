"""Typed errors raised anywhere in clipserve; api/errors.py maps them to OpenAI error objects."""

from __future__ import annotations


class ClipserveError(Exception):
    """Base of every error that becomes an HTTP response."""

    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(ClipserveError):
    status_code = 400
    error_type = "invalid_request_error"


class InvalidImageError(InvalidRequestError):
    """The bytes are not a decodable image of a supported format."""

    default_code = "invalid_image"


class ImageTooLargeError(InvalidRequestError):
    """The image is over the byte or pixel cap (decompression bombs land here)."""

    default_code = "image_too_large"


class ImageFetchError(InvalidRequestError):
    """An image URL could not be fetched, or is not allowed."""

    default_code = "image_fetch_failed"


class ModelNotFoundError(ClipserveError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class RequestTooLargeError(ClipserveError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class ServiceOverloadedError(ClipserveError):
    """A queue is full: the client should retry later."""

    status_code = 503
    error_type = "server_error"
    default_code = "server_overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class ServiceUnavailableError(ServiceOverloadedError):
    """The service is starting or shutting down."""

    default_code = "service_unavailable"


class WeightsUnavailableError(Exception):
    """Weights could not be found or loaded; raised at start, never during a request."""

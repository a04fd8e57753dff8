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


class AuthenticationError(ClipserveError):
    """No key, a malformed key, or a key that is unknown, revoked or expired (OpenAI: 401 invalid_api_key)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="clipserve"'}


class PermissionDeniedError(ClipserveError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(ClipserveError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class InsufficientQuotaError(ClipserveError):
    """The account's credit does not cover the request. Not retryable, so the openai client must not retry."""

    status_code = 429
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"

    @property
    def headers(self) -> dict[str, str]:
        return {"x-should-retry": "false"}


class RateLimitExceededError(ClipserveError):
    """A per-key per-minute limit is reached; `error_type` names the limit ('requests' or 'images')."""

    status_code = 429
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        limit_name: str,
        retry_after_s: float,
        limit_headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = limit_name
        self.retry_after_s = retry_after_s
        self.limit_headers = limit_headers or {}

    @property
    def headers(self) -> dict[str, str]:
        if self.retry_after_s == float("inf"):
            return {**self.limit_headers, "x-should-retry": "false"}
        return {
            **self.limit_headers,
            "Retry-After": str(max(1, int(self.retry_after_s + 0.999))),
            "retry-after-ms": str(int(self.retry_after_s * 1000)),
        }


class IdempotencyConflictError(ClipserveError):
    """A request with the same Idempotency-Key is still running."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "idempotency_key_in_use"

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class IdempotencyMismatchError(InvalidRequestError):
    """The Idempotency-Key was used before with a different request."""

    default_code = "idempotency_key_reused"


class ConflictError(ClipserveError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class ImageAspectRatioError(InvalidRequestError):
    """The image is longer on one side than the aspect-ratio cap allows (refused before decoding)."""

    default_code = "image_aspect_ratio"


class CollectionQuotaError(InvalidRequestError):
    """An account holds as many collections (code collection_quota_exceeded) or stored items (code
    item_quota_exceeded) as its quota allows. A 400, not a 429: waiting does not free a quota, and clients
    (the openai SDK among them) retry 429s on their own."""

    default_code = "collection_quota_exceeded"


class StorageFullError(ServiceOverloadedError):
    """The database's disk (or its size cap) is full, so nothing can be written until an operator frees space.

    A 503 with Retry-After rather than WebDAV's 507: it is the server's condition, not the request's (a smaller
    request would fail too), and clients, SDKs and load balancers know to back off from, or route around, a 503.
    """

    default_code = "storage_full"

    def __init__(self, message: str, *, retry_after_s: int = 30) -> None:
        super().__init__(message, retry_after_s=retry_after_s)


# request bodies and connections (issue 10; docs/security.md, section bodies)
class InvalidJsonError(InvalidRequestError):
    """The body is not JSON, not an object, or has a token no client sends (a 100-digit number)."""

    default_code = "invalid_json"

    def __init__(self, message: str, *, param: str | None = "body", code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)


class JsonTooComplexError(ClipserveError):
    """The body is over a structure limit (keys, strings, values: 413; nesting depth: 400)."""

    status_code = 413
    error_type = "invalid_request_error"
    default_code = "json_too_complex"

    def __init__(self, message: str, *, code: str, status_code: int = 413) -> None:
        super().__init__(message, param="body", code=code)
        self.status_code = status_code


class RequestTimeoutError(ClipserveError):
    """The client sent its body too slowly; the connection is closed after the answer."""

    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"

    @property
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class ClientDisconnectedError(InvalidRequestError):
    """The client went away before its body arrived (nobody reads this answer; it is logged and counted)."""

    default_code = "client_disconnected"


class ClassifierQuotaError(InvalidRequestError):
    """An account holds as many classifiers as its quota allows (a 400, as for collections: waiting frees
    nothing)."""

    default_code = "classifier_quota_exceeded"


class TrainingBudgetExceededError(RateLimitExceededError):
    """An account used its per-minute classifier training CPU (classifier_training_cpu_s_per_minute)."""

    default_code = "classifier_training_budget"


class BatchQuotaError(InvalidRequestError):
    """An account holds as many file bytes (code file_storage_quota_exceeded) or running batches (code
    batch_quota_exceeded) as its quota allows (a 400, as for collections: waiting frees nothing)."""

    default_code = "batch_quota_exceeded"

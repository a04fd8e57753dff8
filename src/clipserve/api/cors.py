"""CORS for web pages that call the API (the OpenAI JS client in a browser): off unless origins are listed."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from clipserve.config import Settings

ALLOWED_METHODS = ("GET", "POST", "DELETE")
# What the OpenAI JS client (openai 6.x: client.js, internal/detect-platform.js) and the OpenAI conventions send.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Accept",
    "Idempotency-Key",
    "X-Request-Id",
    "OpenAI-Organization",
    "OpenAI-Project",
    "OpenAI-Beta",
    "X-Stainless-Lang",
    "X-Stainless-Package-Version",
    "X-Stainless-OS",
    "X-Stainless-Arch",
    "X-Stainless-Runtime",
    "X-Stainless-Runtime-Version",
    "X-Stainless-Retry-Count",
    "X-Stainless-Timeout",
    "X-Stainless-Async",
    "X-Stainless-Helper-Method",
    "X-Stainless-Poll-Helper",
    "X-Stainless-Custom-Poll-Interval",
)
# Response headers a page's script may read: the client's retry logic and what clipserve reports per request.
EXPOSED_HEADERS = (
    "Retry-After",
    "X-Request-Id",
    "X-Should-Retry",
    "X-Total-Time-Ms",
    "X-Queue-Time-Ms",
    "X-Decode-Time-Ms",
    "X-Compute-Time-Ms",
    "X-Request-Cost-Micros",
    "X-Clipserve-Weights",
    "X-Ratelimit-Limit-Requests",
    "X-Ratelimit-Remaining-Requests",
    "X-Ratelimit-Reset-Requests",
    "X-Ratelimit-Limit-Images",
    "X-Ratelimit-Remaining-Images",
    "X-Ratelimit-Reset-Images",
)
PREFLIGHT_MAX_AGE_S = 600


def install_cors(app: FastAPI, settings: Settings) -> None:
    """Answer preflights and add Access-Control-* headers for the configured origins; nothing when none are."""
    if not settings.cors_allowed_origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(settings.cors_allowed_origins),
        allow_credentials=settings.cors_allow_credentials,
        allow_methods=list(ALLOWED_METHODS),
        allow_headers=list(ALLOWED_HEADERS),
        expose_headers=list(EXPOSED_HEADERS),
        max_age=PREFLIGHT_MAX_AGE_S,
    )

"""The security headers every HTML page carries: a strict CSP (no inline code), no framing, no sniffing."""

from __future__ import annotations

# img-src allows any http(s) image: search hits show each item's metadata.image_url, wherever it lives.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: https: http:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
STATIC_CACHE_CONTROL = "public, max-age=3600"


def page_headers() -> dict[str, str]:
    """Headers for a page response. Pages show live, per-session data, so none is ever cached."""
    return {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }

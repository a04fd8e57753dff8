"""The session cookie's flags and the same-origin rule that decides whether a cookie may authenticate."""

from __future__ import annotations

import pytest
from fastapi import Request, Response

from clipserve.api.session_cookies import (
    SESSION_COOKIE,
    is_same_origin,
    set_presession_cookie,
    set_session_cookie,
    tokens_match,
)
from clipserve.config import Settings


def _request(scheme: str = "http", host: str = "app.example:8000", **headers: str) -> Request:
    raw = [(b"host", host.encode())] + [
        (name.replace("_", "-").lower().encode(), value.encode()) for name, value in headers.items()
    ]
    return Request({"type": "http", "scheme": scheme, "method": "POST", "path": "/", "headers": raw})


@pytest.mark.parametrize(
    ("scheme", "host", "headers", "same"),
    [
        ("http", "app.example:8000", {}, True),
        ("http", "app.example:8000", {"origin": "http://app.example:8000"}, True),
        ("http", "APP.example:8000", {"origin": "http://app.EXAMPLE:8000"}, True),
        ("https", "app.example", {"origin": "https://app.example:443"}, True),
        ("https", "app.example:443", {"origin": "https://app.example"}, True),
        ("http", "app.example:8000", {"sec_fetch_site": "same-origin"}, True),
        ("http", "app.example:8000", {"sec_fetch_site": "none"}, True),
        ("http", "app.example:8000", {"origin": "http://evil.example:8000"}, False),
        ("http", "app.example:8000", {"origin": "http://app.example:8001"}, False),
        ("http", "app.example:8000", {"origin": "https://app.example:8000"}, False),
        ("http", "app.example:8000", {"origin": "null"}, False),
        ("http", "app.example:8000", {"origin": "http://app.example:8000/path"}, False),
        ("http", "app.example:8000", {"origin": "http://user@app.example:8000"}, False),
        ("http", "app.example:8000", {"origin": "http://app.example.evil:8000"}, False),
        ("http", "app.example:8000", {"sec_fetch_site": "cross-site"}, False),
        (
            "http",
            "app.example:8000",
            {"origin": "http://app.example:8000", "sec_fetch_site": "cross-site"},
            False,
        ),
    ],
)
def test_same_origin_rule(scheme: str, host: str, headers: dict[str, str], same: bool) -> None:
    assert is_same_origin(_request(scheme, host, **headers)) is same


def test_tokens_match_only_equal_non_empty_tokens() -> None:
    assert tokens_match("abc", "abc")
    assert not tokens_match("abc", "abd")
    assert not tokens_match("", "")
    assert not tokens_match(None, "abc")
    assert not tokens_match("abc", None)


def _set_cookie(response: Response) -> str:
    return response.headers["set-cookie"].lower()


@pytest.mark.parametrize(
    ("mode", "scheme", "secure"),
    [
        ("auto", "http", False),
        ("auto", "https", True),
        ("always", "http", True),
        ("never", "https", False),
    ],
)
def test_session_cookie_flags(mode: str, scheme: str, secure: bool) -> None:
    response = Response()
    settings = Settings(session_cookie_secure=mode, session_max_age_s=3600)  # type: ignore[arg-type]
    set_session_cookie(response, "tok", _request(scheme), settings)
    cookie = _set_cookie(response)
    assert cookie.startswith(f"{SESSION_COOKIE}=tok;")
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert "max-age=3600" in cookie
    assert ("; secure" in cookie) is secure


def test_presession_cookie_is_strict_and_http_only() -> None:
    response = Response()
    set_presession_cookie(response, "pre", _request("https"), Settings())
    cookie = _set_cookie(response)
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert "; secure" in cookie

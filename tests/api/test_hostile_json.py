"""Hostile request bodies, as raw bytes, to every route that reads one: never a 5xx, always an OpenAI error
object, and the server still answers normally afterwards. Sent with a key, without one (keys required) and in
local mode. Sizes are bounded so the whole file runs in seconds; docs/security.md says what each case stands for.
"""

from __future__ import annotations

import codecs
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.hostile_app import COLLECTION, HostileServer, examples

BODY_ROUTES = [
    "/v1/embeddings",
    "/v1/classify",
    "/v1/rank",
    "/v1/collections",
    f"/v1/collections/{COLLECTION}/items",
    f"/v1/collections/{COLLECTION}/search",
    "/v1/signup",
    "/v1/admin/accounts",
    "/v1/admin/accounts/1/grants",
    "/v1/admin/keys",
]
DEPTH = 1_000
KEYS = 50_000  # about 0.9 MB: enough to show a per-key cost, small enough to stay fast

HOSTILE_BODIES: dict[str, bytes] = {
    "empty": b"",
    "whitespace": b" \r\n\t ",
    "truncated object": b'{"input": ["a cat", ',
    "truncated string": b'{"input": "a c',
    "truncated escape": b'{"input": "\\u12',
    "lone brace": b"{",
    "lone close": b"}",
    "null": b"null",
    "true": b"true",
    "number": b"42",
    "string": b'"a cat"',
    "list": b'["a cat"]',
    "empty object": b"{}",
    "1e400": b"1e400",
    "NaN": b"NaN",
    "number 1e400 in field": b'{"input": 1e400, "name": 1e400, "items": 1e400, "query": 1e400, "credit": 1e400}',
    "NaN in field": b'{"input": NaN, "top_k": NaN, "credit": NaN, "top_n": Infinity}',
    "huge integer": b'{"input": "x", "top_k": ' + b"9" * 4_300 + b"}",
    "integer over the digit limit": b'{"input": "x", "top_k": ' + b"9" * 5_000 + b"}",
    "duplicate keys": b'{"input": "a cat", "input": ["a", "b"], "name": "x", "name": "y"}',
    "raw NUL byte": b'{"input": "a\x00cat"}',
    "escaped NUL": b'{"input": "a\\u0000cat", "name": "\\u0000"}',
    "raw control characters": b'{"input": "a\x01\x1f\x7fcat"}',
    "invalid UTF-8": b'{"input": "\xff\xfe\xc3\x28"}',
    "overlong UTF-8": b'{"input": "\xc0\xaf\xe0\x80\xaf"}',
    "UTF-8 encoded surrogate": b'{"input": "\xed\xa0\x80"}',
    "escaped lone surrogate": b'{"input": "\\ud800", "name": "\\udfff", "items": [{"id": "\\ud800"}]}',
    "UTF-8 BOM": codecs.BOM_UTF8 + b'{"input": "a cat"}',
    "UTF-16 body": '{"input": "a cat"}'.encode("utf-16"),
    "UTF-32 body": '{"input": "a cat"}'.encode("utf-32"),
    "trailing garbage": b'{"input": "a cat"} trailing',
    "two documents": b'{"input": "a"}{"input": "b"}',
    "comments": b'{"input": "a cat" /* comment */}',
    "single quotes": b"{'input': 'a cat'}",
    "unquoted keys": b"{input: 1}",
    "trailing comma": b'{"input": "a cat",}',
    f"array depth {DEPTH}": b'{"input": ' + b"[" * DEPTH + b"]" * DEPTH + b"}",
    f"object depth {DEPTH}": b'{"input": ' + b'{"a":' * DEPTH + b"1" + b"}" * DEPTH + b"}",
    "unclosed depth 100000": b"[" * 100_000,
    "metadata depth 300": (
        b'{"name": "x", "input": "x", "query": {"text": "x"}, "items": [{"id": "deep", "text": "x", "metadata": '
        + b'{"a":' * 300 + b"1" + b"}" * 300 + b"}]}"
    ),
    "filter depth 300": b'{"query": {"text": "x"}, "filter": ' + b'{"$and": [' * 300 + b"{}" + b"]}" * 300 + b"}",
    f"{KEYS} keys": b"{" + b",".join(b'"k%d": %d' % (i, i) for i in range(KEYS)) + b"}",
    f"{KEYS} keys in metadata": (
        b'{"items": [{"id": "wide", "text": "x", "metadata": {'
        + b",".join(b'"k%d": %d' % (i, i) for i in range(KEYS)) + b"}}]}"
    ),
    "many small strings": b'{"input": [' + b",".join([b'"a"'] * 20_000) + b"]}",
    "long key": b'{"' + b"k" * 100_000 + b'": 1, "input": "a cat"}',
}  # fmt: skip
CONTENT_TYPES: dict[str, str | None] = {
    "json": "application/json",
    "none": None,
    "text/plain": "text/plain",
    "form": "application/x-www-form-urlencoded",
    "multipart": "multipart/form-data; boundary=xyz",
    "json utf-16": "application/json; charset=utf-16",
    "json charset garbage": "application/json; charset=no-such-charset",
    "json+suffix": "application/vnd.api+json",
    "garbage": "\u00ff/\u00fe; ;;=",
}
VALID_BODY = b'{"input": "a photo of a cat"}'


def _check_after(server: HostileServer, what: str) -> None:
    server.check_still_serving(what)
    server.check_collection_still_serving(what)


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_hostile_bodies_get_a_clear_4xx_on_every_route(
    request: pytest.FixtureRequest, auth_server: HostileServer, route: str
) -> None:
    """Each hostile body with a key, without one, and in local mode; all failures listed at once."""
    local: HostileServer = request.getfixturevalue("local_server")
    failures: list[str] = []
    for server, authenticated in ((auth_server, True), (auth_server, False), (local, True)):
        who = server.mode if authenticated else "no key"
        if server.mode == "local" and route.startswith(("/v1/admin", "/v1/signup")):
            continue
        for name, body in HOSTILE_BODIES.items():
            what = f"[{who}] POST {route} with body {name!r} ({len(body)} bytes)"
            try:
                server.check(server.send("POST", route, content=body, authenticated=authenticated), what)
            except AssertionError as failure:
                failures.append(str(failure))
        try:
            _check_after(server, f"[{who}] all hostile bodies to {route}")
        except AssertionError as failure:
            failures.append(str(failure))
            server.reset()
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)


@pytest.mark.parametrize("content_type", list(CONTENT_TYPES))
def test_wrong_content_types_get_a_clear_4xx(any_server: HostileServer, content_type: str) -> None:
    failures: list[str] = []
    for route in BODY_ROUTES:
        if any_server.mode == "local" and route.startswith(("/v1/admin", "/v1/signup")):
            continue
        for body in (
            VALID_BODY,
            b"input=a+cat",
            b"--xyz\r\nContent-Disposition: form-data\r\n\r\nx\r\n--xyz--",
        ):
            what = f"[{any_server.mode}] POST {route}, Content-Type {content_type!r}, body {body[:30]!r}"
            header = CONTENT_TYPES[content_type]
            try:
                response = any_server.send(
                    "POST", route, content=body, content_type=None,
                    headers={"Content-Type": header} if header is not None else {},
                )  # fmt: skip
                any_server.check(response, what)
            except AssertionError as failure:
                failures.append(str(failure))
    any_server.check_still_serving(f"wrong content types ({content_type})")
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)


def test_a_body_on_a_get_or_delete_is_ignored_or_refused(any_server: HostileServer) -> None:
    failures: list[str] = []
    for method, route in (
        ("GET", "/v1/models"), ("GET", "/v1/collections"), ("GET", f"/v1/collections/{COLLECTION}"),
        ("DELETE", f"/v1/collections/{COLLECTION}/items/no-such-item"), ("GET", "/health"),
    ):  # fmt: skip
        for name in ("invalid UTF-8", f"array depth {DEPTH}", "truncated object"):
            what = f"[{any_server.mode}] {method} {route} with body {name!r}"
            try:
                any_server.check(any_server.send(method, route, content=HOSTILE_BODIES[name]), what)
            except AssertionError as failure:
                failures.append(str(failure))
    any_server.check_still_serving("bodies on GET and DELETE")
    assert not failures, f"{len(failures)} failure(s):\n\n" + "\n\n".join(failures)


# Random bytes and random mutations of a valid body, with a key: the parser never fails with a 5xx.
JSON_ALPHABET = st.sampled_from([*b'{}[]":,\\ 0123456789.eE+-truefalsnNIfiy', 0, 0xFF, 0xED, 0xC0])


def _mutate(valid: bytes, cut: int, insert: bytes) -> bytes:
    cut %= len(valid) + 1
    return valid[:cut] + insert + valid[cut:]


@settings(max_examples=examples(40))
@given(
    route=st.sampled_from(BODY_ROUTES),
    body=st.one_of(
        st.binary(max_size=200),
        st.lists(JSON_ALPHABET, max_size=200).map(bytes),
        st.builds(
            _mutate,
            st.just(
                b'{"input": ["a cat", {"text": "x"}], "name": "n", "items": [{"text": "x"}], '
                b'"query": {"text": "x"}, "labels": ["a", "b"], "documents": ["d"], "credit": "1"}'
            ),
            st.integers(0, 200),
            st.lists(JSON_ALPHABET, min_size=1, max_size=8).map(bytes),
        ),
    ),
)
def test_random_and_mutated_bodies_never_give_a_5xx(
    auth_server: HostileServer, route: str, body: bytes
) -> None:
    what = f"[auth] POST {route} with body {body!r}"
    auth_server.check(auth_server.send("POST", route, content=body), what)


def test_the_server_still_serves_after_the_hostile_json_suite(any_server: HostileServer) -> None:
    _check_after(any_server, "the hostile JSON suite")
    response: Any = any_server.send("GET", "/health", authenticated=False)
    assert response.status_code == 200

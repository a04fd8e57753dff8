"""The standing adversarial suite's shared parts: the real app started once around the tiny model, the
requests every /v1 route accepts, and the property every hostile request must keep.

The property (`check_response`): no 5xx (a 503 only as a real overload answer, with Retry-After), every 4xx is
the OpenAI error object with a string message, and the server still answers a normal request afterwards.

Bounds: CLIPSERVE_FUZZ=ci (the default) keeps the whole adversarial group to a few minutes on 2 cores;
CLIPSERVE_FUZZ=deep runs many more examples, with fresh randomness each run (see docs/security.md).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from hypothesis import HealthCheck, reject, settings
from starlette.testclient import TestClient

from clipserve.api.app import create_app
from clipserve.model_card import HUB_ID
from clipserve.runtime.model import ClipRuntime
from tests.support import (
    READY_TIMEOUT_S,
    create_key,
    data_uri,
    encode_image,
    gradient_image,
    make_settings,
    wait_for,
)

MAX_SENDABLE_URL = 32_768

# ---------------------------------------------------------------------------------------------------------
# Bounds: one Hypothesis profile per mode; per-test example counts scale with the mode.

FUZZ_MODE = os.environ.get("CLIPSERVE_FUZZ", "ci")
if FUZZ_MODE not in ("ci", "deep"):
    raise ValueError(f"CLIPSERVE_FUZZ must be 'ci' or 'deep', not {FUZZ_MODE!r}")
DEEP_FACTOR = 25  # deep runs this many times the ci examples

_COMMON = {
    # The app is started once per module and shared by every example, on purpose: state that one hostile
    # request leaves behind (a poisoned collection item) must show in the next normal request.
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    # Generous: proves "does not hang" on a loaded 2-core machine, never a latency assertion.
    "deadline": timedelta(seconds=20),
    "print_blob": True,
}
# ci: the same examples every run (a red CI is reproducible), no example database written into the checkout.
settings.register_profile("clipserve-ci", derandomize=True, database=None, **_COMMON)  # type: ignore[arg-type]
settings.register_profile("clipserve-deep", derandomize=False, **_COMMON)  # type: ignore[arg-type]
settings.load_profile(f"clipserve-{FUZZ_MODE}")


def examples(ci: int) -> int:
    """max_examples for a test: `ci` in the bounded run, DEEP_FACTOR times more in the deep one."""
    return ci if FUZZ_MODE == "ci" else ci * DEEP_FACTOR


# ---------------------------------------------------------------------------------------------------------
# The server under test.

Mode = Literal["auth", "local"]
Response = Any  # the TestClient's response (httpx or httpx2, whichever this starlette is built on)
COLLECTION = "hostile"  # the collection the item and search routes work on
IMAGE = data_uri(encode_image(gradient_image(16, 12)))
VECTOR = [round(((i * 37) % 101) / 101 - 0.5, 4) for i in range(512)]
BIG_CREDIT = "100000"  # dollars: enough for every example of a deep run
NORMAL_REQUEST = ("POST", "/v1/embeddings", {"input": "a photo of a cat"})


class _ErrorLog(logging.Handler):
    """Keeps the tracebacks the app logs, so a 5xx failure says where it came from."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.tracebacks: list[str] = []
        self._mark = 0

    def mark(self) -> None:
        """A request is about to be sent: what is logged from now on is its doing."""
        self._mark = len(self.tracebacks)

    def latest(self) -> str:
        new = self.tracebacks[self._mark :]
        return f"\nserver traceback: {new[-1]}" if new else ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            frames = traceback.extract_tb(exc.__traceback__)
            # the innermost frame, then the innermost two of our own code: where it broke, and why it got there
            ours = [f for f in frames[:-1] if "/clipserve/" in f.filename][-2:]
            where = " <- ".join(
                f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in [*frames[-1:], *reversed(ours)]
            )
            self.tracebacks.append(f"{type(exc).__name__}: {str(exc)[:300]} at {where}")
        else:
            self.tracebacks.append(record.getMessage()[:300])


@dataclass
class HostileServer:
    """The real app (lifespan running) and a client; `mode` says whether API keys are required."""

    client: TestClient
    mode: Mode
    data_dir: Path
    user_key: str | None
    admin_key: str | None
    user_account_id: int | None
    decoy_key_id: int | None
    errors: _ErrorLog
    requests_sent: int = 0
    own_key_ids: frozenset[int] = frozenset()
    seen: dict[str, int] = field(default_factory=dict)

    def auth_headers(self, path: str) -> dict[str, str]:
        """The admin key for admin, usage and billing routes, the user key for the rest (none in local mode)."""
        if self.mode == "local":
            return {}
        admin_paths = ("/v1/admin", "/v1/usage", "/v1/dashboard")
        key = self.admin_key if path.startswith(admin_paths) else self.user_key
        return {"Authorization": f"Bearer {key}"}

    def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        content_type: str | None = "application/json",
        query: str = "",
        headers: dict[str, str | bytes] | None = None,
        authenticated: bool = True,
    ) -> Response:
        """One request with a raw body; `path` and `query` must already be percent-encoded."""
        chosen: dict[str, str | bytes] = {}
        if authenticated:
            chosen.update(self.auth_headers(path))
        if content is not None and content_type is not None:
            chosen["Content-Type"] = content_type
        chosen.update(headers or {})
        # as bytes: the client would refuse non-ASCII text, and a hostile header is sent as the bytes it is
        sent = {k.encode(): v if isinstance(v, bytes) else v.encode("latin-1") for k, v in chosen.items()}
        self.requests_sent += 1
        self.errors.mark()
        url = path + (f"?{query}" if query else "")
        if method == "DELETE" and self._revokes_own_key(path):
            # An admin may revoke any key, these included; a drawn id such as " 1" would end the suite's own
            # session for every later example (seen in a deep run). Revoking is exercised on the decoy.
            reject()
        if len(url) > MAX_SENDABLE_URL:
            # No HTTP client builds it (httpx refuses at 65,536) and front ends answer 414 long before: not a
            # request anyone can send, so Hypothesis is told to draw another.
            reject()
        return self.client.request(method, url, content=content, headers=sent)

    def _revokes_own_key(self, path: str) -> bool:
        prefix = "/v1/admin/keys/"
        if not path.startswith(prefix):
            return False
        try:
            return int(unquote(path.removeprefix(prefix))) in self.own_key_ids
        except ValueError:
            return False

    def send_json(self, method: str, path: str, body: Any, **kwargs: Any) -> Response:
        return self.send(method, path, content=None if body is None else dumps(body), **kwargs)

    def check(self, response: Response, what: str) -> None:
        """The property every response to a hostile request must keep (see the module docstring)."""
        check_response(response, what, self.errors)

    def check_still_serving(self, after: str) -> None:
        """A normal request still gets its normal answer (catches poisoned state and a wedged server)."""
        method, path, body = NORMAL_REQUEST
        response = self.send_json(method, path, body)
        assert response.status_code == 200, (
            f"after {after}: a normal {method} {path} got {response.status_code}: {response.text[:500]}"
            f"{self._last_traceback()}"
        )

    def check_collection_still_serving(self, after: str) -> None:
        """The shared collection can still be listed, searched and read (catches poisoned items)."""
        search = self.send_json(
            "POST", f"/v1/collections/{COLLECTION}/search", {"query": {"vector": VECTOR}, "top_k": 50}
        )
        assert search.status_code == 200, (
            f"after {after}: searching the collection got {search.status_code}: {search.text[:500]}"
            f"{self._last_traceback()}"
        )
        item = self.send("GET", f"/v1/collections/{COLLECTION}/items/item-1")
        assert item.status_code == 200, (
            f"after {after}: GET item-1 got {item.status_code}: {item.text[:500]}{self._last_traceback()}"
        )

    def operations(self) -> dict[str, Operation]:
        """This server's operations (with its real account and key ids), by id."""
        ops = operations(self.user_account_id, self.decoy_key_id)
        return {op.id: op for op in ops if applies(op, self.mode)}

    def item_count(self) -> int:
        response = self.send("GET", f"/v1/collections/{COLLECTION}")
        assert response.status_code == 200, response.text
        return int(response.json()["item_count"])

    def restore(self) -> None:
        """Put back what hostile requests may legitimately change: the shared items, the keys' credit."""
        for request in SETUP_REQUESTS:
            method, path, body = request
            response = self.send_json(method, path, body)
            assert response.status_code < 500, f"restoring: {method} {path}: {response.text[:300]}"

    def ensure_keys(self) -> None:
        """New keys if a hostile admin request revoked ours or took the user's credit (both are allowed)."""
        if self.mode == "local":
            return
        method, path, body = NORMAL_REQUEST
        if self.send_json(method, path, body).status_code in (401, 429):
            self.user_key = create_key(self.data_dir, "fuzz user", credit=BIG_CREDIT)
        if self.send("GET", "/v1/admin/accounts").status_code in (401, 403):
            self.admin_key = create_key(self.data_dir, "fuzz admin", credit=BIG_CREDIT, is_admin=True)

    def reset(self) -> None:
        """After a failure: the shared collection made anew (a poisoned item must not fail every later test)."""
        self.send("DELETE", f"/v1/collections/{COLLECTION}")
        self.restore()

    def _last_traceback(self) -> str:
        return self.errors.latest()


def dumps(body: Any) -> bytes:
    """JSON as an attacker may send it: lone surrogates as \\uXXXX escapes, NaN and Infinity as bare tokens."""
    return json.dumps(body, ensure_ascii=True, allow_nan=True).encode("ascii")


def encode_path_segment(value: str) -> str:
    """Percent-encode one path segment or query value; lone surrogates go out as their (invalid) UTF-8, and
    dots as %2E, or the client would resolve an id of '..' into the parent path (DELETE the collection)."""
    return quote(value.encode("utf-8", "surrogatepass"), safe="").replace(".", "%2E")


def check_response(response: Response, what: str, errors: _ErrorLog | None = None) -> None:
    status = response.status_code
    tail = errors.latest() if errors else ""
    context = f"{what}\n-> {status}: {response.text[:500]!r}{tail}"
    if status == 503:
        code = _error_code(response)
        assert code in ("server_overloaded", "service_unavailable"), f"503 that is not an overload: {context}"
        assert "retry-after" in response.headers, f"503 without Retry-After: {context}"
        return
    assert status < 500, f"server error: {context}"
    if 400 <= status < 500:
        try:
            body = response.json()
        except ValueError:
            raise AssertionError(f"4xx body is not JSON: {context}") from None
        assert isinstance(body, dict), f"not an OpenAI error object: {context}"
        assert set(body) == {"error"}, f"not an OpenAI error object: {context}"
        error = body["error"]
        assert isinstance(error, dict), f"not an OpenAI error object: {context}"
        assert set(error) == {"message", "type", "param", "code"}, f"error fields: {context}"
        assert isinstance(error["message"], str), f"error message: {context}"
        assert error["message"], f"empty error message: {context}"
        assert isinstance(error["type"], str), f"error type: {context}"
        assert error["param"] is None or isinstance(error["param"], str), f"error param: {context}"
        assert error["code"] is None or isinstance(error["code"], str), f"error code: {context}"


def _error_code(response: Response) -> object:
    try:
        return response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return None


# ---------------------------------------------------------------------------------------------------------
# The requests each /v1 route accepts (each answers 2xx as written; tests/api/test_hostile_strings.py checks
# that), so that a hostile value put in place of one field reaches as deep into the code as it can.


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # with {name} placeholders, filled from path_params
    path_params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: Any = None
    touches_collection: bool = False

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.body_kind}]" if self.body_kind else "")

    @property
    def body_kind(self) -> str:
        if isinstance(self.body, dict) and "inputs" in self.body:
            return "hf"
        if isinstance(self.body, dict) and "messages" in self.body:
            return "messages"
        if isinstance(self.body, dict) and isinstance(self.body.get("query"), dict):
            return str(next(iter(self.body["query"])))
        return ""

    def url(self, path_params: dict[str, str] | None = None) -> str:
        values = {**self.path_params, **(path_params or {})}
        return self.path.format(**{k: encode_path_segment(v) for k, v in values.items()})

    def query_string(self, query: dict[str, str] | None = None) -> str:
        values = {**self.query, **(query or {})}
        return "&".join(f"{encode_path_segment(k)}={encode_path_segment(v)}" for k, v in values.items())

    def send(
        self,
        server: HostileServer,
        *,
        body: Any = None,
        raw_body: bytes | None = None,
        path_params: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Response:
        content = raw_body if raw_body is not None else (None if body is None else dumps(body))
        if content is None and self.body is not None and body is None:
            content = dumps(self.body)
        return server.send(
            self.method, self.url(path_params), content=content, query=self.query_string(query)
        )


SETUP_REQUESTS: list[tuple[str, str, Any]] = [
    ("POST", "/v1/collections", {"name": COLLECTION, "description": "the adversarial suite's collection"}),
    (
        "POST",
        f"/v1/collections/{COLLECTION}/items",
        {
            "items": [
                {
                    "id": "item-1",
                    "text": "a cat",
                    "metadata": {"place": "Zürich", "tags": ["a", "b"], "n": 1},
                },
                {"id": "item-2", "vector": VECTOR, "metadata": {"place": "café", "n": 2}},
                {"id": "doomed", "text": "to be deleted", "metadata": {}},
            ]
        },
    ),
    ("POST", "/v1/collections", {"name": "scratch", "description": "deleted by the baseline"}),
]


def operations(user_account_id: int | None = None, decoy_key_id: int | None = None) -> list[Operation]:
    """Every /v1 route with a body or parameters, with a request it accepts (given the server's ids)."""
    user = str(user_account_id or 1)
    decoy = str(decoy_key_id or 1)
    return [
        Operation(
            "POST", "/v1/embeddings",
            body={
                "model": HUB_ID, "encoding_format": "float", "user": "someone",
                "input": [
                    "a photo of a cat", {"text": "a dog"}, {"type": "text", "text": "a bird"}, {"image": IMAGE},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            },
        ),
        Operation(
            "POST", "/v1/embeddings",
            body={
                "model": HUB_ID,
                "messages": [
                    {"role": "user", "content": "a caption"},
                    {"role": "user", "content": [
                        {"type": "text", "text": "a cat"}, {"type": "image_url", "image_url": {"url": IMAGE}},
                    ]},
                ],
            },
        ),
        Operation(
            "POST", "/v1/classify",
            body={
                "model": HUB_ID, "input": [{"image": IMAGE}], "labels": ["cat", "dog", "a bird"],
                "template": "a photo of a {}.", "top_k": 2,
            },
        ),
        Operation(
            "POST", "/v1/classify",
            body={
                "inputs": IMAGE,
                "parameters": {"candidate_labels": ["cat", "dog"], "hypothesis_template": "This is a photo of {}."},
            },
        ),
        Operation(
            "POST", "/v1/rank",
            body={"model": HUB_ID, "query": "a cat", "documents": ["a cat", {"text": "a dog"}, {"image": IMAGE}],
                  "top_n": 2},
        ),
        Operation("POST", "/v1/collections", body={"name": "created", "description": "made by the suite"}),
        Operation("GET", "/v1/collections/{name}", {"name": COLLECTION}),
        Operation("DELETE", "/v1/collections/{name}", {"name": "scratch"}),
        Operation(
            "POST", "/v1/collections/{name}/items", {"name": COLLECTION}, touches_collection=True,
            body={"items": [
                {"id": "added-1", "text": "a dog", "metadata": {"kind": "dog", "year": 2024, "tags": ["x"]}},
                {"id": "added-2", "image": IMAGE, "metadata": {"kind": "picture"}},
                {"id": "added-3", "vector": VECTOR},
            ]},
        ),
        Operation(
            "GET", "/v1/collections/{name}/items/{item_id}", {"name": COLLECTION, "item_id": "item-1"},
            {"include_vector": "true"},
        ),
        Operation(
            "DELETE", "/v1/collections/{name}/items/{item_id}", {"name": COLLECTION, "item_id": "doomed"},
            touches_collection=True,
        ),
        Operation(
            "POST", "/v1/collections/{name}/search", {"name": COLLECTION}, touches_collection=True,
            body={
                "query": {"text": "a cat"}, "top_k": 3, "include_vectors": False,
                "filter": {"place": "Zürich", "n": {"$gte": 0, "$lt": 10},
                           "$or": [{"tags": {"$in": ["a", "sea"]}}, {"n": {"$ne": 5}}]},
            },
        ),
        Operation(
            "POST", "/v1/collections/{name}/search", {"name": COLLECTION}, touches_collection=True,
            body={"query": {"id": "item-1"}, "top_k": 2, "filter": {"place": {"$nin": ["x"]}}},
        ),
        Operation("GET", "/v1/models/{model_id}", {"model_id": HUB_ID}),
        Operation("GET", "/v1/usage", query={"start_date": "2025-01-01", "end_date": "2025-12-31"}),
        Operation("POST", "/v1/signup", body={"name": "a new user"}),
        Operation("POST", "/v1/admin/accounts", body={"name": "an account", "credit": "1.5"}),
        Operation("POST", "/v1/admin/accounts/{account_id}/grants", {"account_id": user},
                  body={"credit": "0.25", "note": "a grant"}),
        Operation("GET", "/v1/admin/keys", query={"account_id": user}),
        Operation(
            "POST", "/v1/admin/keys",
            body={"name": "another key", "account_id": int(user), "credit": "0", "admin": False,
                  "expires_in_days": 30, "requests_per_minute": 1000, "images_per_minute": 1000},
        ),
        Operation("DELETE", "/v1/admin/keys/{key_id}", {"key_id": decoy}),
        Operation("GET", "/v1/admin/usage",
                  query={"account_id": user, "start_date": "2025-01-01", "end_date": "2025-12-31"}),
        Operation("GET", "/v1/dashboard/billing/usage", query={"start_date": "2025-01-01", "end_date": "2025-12-31"}),
    ]  # fmt: skip


KEYED_PATHS = ("/v1/admin", "/v1/dashboard", "/v1/signup", "/v1/usage")


def applies(op: Operation, mode: Mode) -> bool:
    """Admin, usage and sign-up routes mean something only with keys; the rest are fuzzed in both modes."""
    return mode == "auth" or not op.path.startswith(KEYED_PATHS)


# ---------------------------------------------------------------------------------------------------------
# Where a hostile value can go in a request: every leaf of the body (and every key of every object), every
# path parameter and every query parameter.

Slot = tuple[str, tuple[Any, ...]]  # ("body" | "body-key" | "path" | "query", location)


def body_slots(body: Any, *, strings_only: bool) -> list[Slot]:
    """Each leaf of `body` (only the string leaves if strings_only; else each object and list too) and each
    key of each object in it."""
    slots: list[Slot] = []

    def walk(node: Any, at: tuple[Any, ...]) -> None:
        if at and not strings_only and isinstance(node, dict | list):
            slots.append(("body", at))  # the whole object or list replaced (by null, a number, ...)
        if isinstance(node, dict):
            for key, value in node.items():
                slots.append(("body-key", (*at, key)))
                walk(value, (*at, key))
        elif isinstance(node, list):
            # a long list (a vector) is one slot at its first element, not 512
            for index, value in enumerate(node[:4]):
                walk(value, (*at, index))
        elif isinstance(node, str) or not strings_only:
            slots.append(("body", at))

    if body is not None:
        walk(body, ())
    return slots


def slots(op: Operation, *, strings_only: bool) -> list[Slot]:
    found = body_slots(op.body, strings_only=strings_only)
    found += [("path", (name,)) for name in op.path_params]
    found += [("query", (name,)) for name in op.query]
    return found


def replace_in(body: Any, slot: Slot, value: Any) -> Any:
    """A copy of `body` with the value (or, for a body-key slot, the key) at `slot` replaced by `value`."""
    kind, at = slot
    copied = copy.deepcopy(body)
    parent = copied
    for step in at[:-1]:
        parent = parent[step]
    last = at[-1]
    if kind == "body-key":
        if not isinstance(value, str):
            value = json.dumps(value)[:1000]  # object keys are strings in JSON
        parent[value] = parent.pop(last)
    else:
        parent[last] = value
    return copied


def send_with(
    server: HostileServer, op: Operation, slot: Slot, value: Any, raw: bytes | None = None
) -> Response:
    """`op` with `value` at `slot`; for body slots `raw` (raw JSON text) replaces the value if given."""
    kind, at = slot
    if kind == "path":
        return op.send(server, path_params={at[0]: str(value)})
    if kind == "query":
        return op.send(server, query={at[0]: str(value)})
    if raw is not None:
        marker = "\ue000clipserve-raw\ue000"
        text = dumps(replace_in(op.body, slot, marker)).decode()
        return op.send(
            server, raw_body=text.replace(json.dumps(marker), raw.decode("latin-1")).encode("latin-1")
        )
    return op.send(server, body=replace_in(op.body, slot, value))


# ---------------------------------------------------------------------------------------------------------
# Starting it.


def _account_of(data_dir: Path, key: str) -> tuple[int, int]:
    from clipserve.store.accounts import AccountStore
    from clipserve.store.database import Database

    database = Database(f"sqlite:///{data_dir / 'clipserve.db'}")
    try:
        record = AccountStore(database).find_key(key[8:20])
        assert record is not None
        return record.account_id, record.id
    finally:
        database.close()


@contextmanager
def hostile_server(runtime: ClipRuntime, data_dir: Path, mode: Mode) -> Iterator[HostileServer]:
    """The real app with every route, keys required (`auth`: a user key, an admin key) or not (`local`)."""
    user_key = admin_key = None
    user_account = decoy_key = None
    own_key_ids: frozenset[int] = frozenset()
    if mode == "auth":
        user_key = create_key(data_dir, "fuzz user", credit=BIG_CREDIT)
        admin_key = create_key(data_dir, "fuzz admin", credit=BIG_CREDIT, is_admin=True)
        decoy = create_key(data_dir, "decoy", credit="0")
        user_account, user_key_id = _account_of(data_dir, user_key)
        _, admin_key_id = _account_of(data_dir, admin_key)
        _, decoy_key = _account_of(data_dir, decoy)
        own_key_ids = frozenset({user_key_id, admin_key_id})
    app = create_app(
        make_settings(
            data_dir,
            auth="on" if mode == "auth" else "off",
            # 0: no per-key rate limits, so examples reach the routes instead of a 429
            rate_limit_requests_per_minute=0,
            rate_limit_images_per_minute=0,
            signup_enabled=True,
            image_fetch_timeout_s=2.0,
        ),
        runtime,
    )
    errors = _ErrorLog()
    app_logger = logging.getLogger("clipserve")
    app_logger.addHandler(errors)
    try:
        with TestClient(app, base_url="http://clipserve.test", raise_server_exceptions=False) as client:
            wait_for(lambda: client.get("/ready").status_code == 200, "the app is ready", READY_TIMEOUT_S)
            server = HostileServer(
                client, mode, data_dir, user_key, admin_key, user_account, decoy_key, errors, 0, own_key_ids
            )
            server.restore()
            yield server
    finally:
        app_logger.removeHandler(errors)

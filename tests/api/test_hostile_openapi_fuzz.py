"""A schema-driven fuzz of the whole OpenAPI surface (schemathesis) against the real app: valid and invalid
requests to every operation, with keys required (user key; admin key on admin routes) and in local mode.

Each response must keep the suite's property (tests/api/hostile_app.py: no 5xx, 4xx in the OpenAI error shape)
and schemathesis' own checks where they hold for this API:
- not_a_server_error, content_type_conformance, response_schema_conformance, status_code_conformance: on
  (api/openapi.py lists on each operation the error statuses its route can answer, with the error schema).
- negative_data_rejection: off. Pydantic's lax mode accepts "5" for an integer and 1.0 for 1, which the schema
  calls invalid: not a defect. positive_data_acceptance: off. A request valid by schema is often refused on
  purpose (an unknown collection: 404; `input` is free-form in the schema but must be text or images).
- the stateful and auth checks (use_after_free, ensure_resource_availability, ignored_auth, ...): off; the
  schema declares no links for them to follow, and the suite's client sends the keys itself (in local mode
  none is needed, which ignored_auth would flag).
Bounded per operation by CLIPSERVE_FUZZ (ci: a few examples each; deep: many).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import clipserve.api
from tests.api.hostile_app import HostileServer, dumps, examples

CHECKS: list[Callable[..., Any]] = [
    not_a_server_error,
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
]


def _schema(server: HostileServer) -> Any:
    app: Any = server.client.app
    return schemathesis.openapi.from_dict(app.openapi())


def _declared_operations() -> list[str]:
    """Every operation of every routes_* module, found without building the app (collection stays cheap)."""
    bare = FastAPI()
    for found in pkgutil.iter_modules(clipserve.api.__path__):
        if found.name.startswith("routes_"):
            bare.include_router(importlib.import_module(f"clipserve.api.{found.name}").router)
    paths: dict[str, dict[str, Any]] = bare.openapi()["paths"]
    return [f"{method.upper()} {path}" for path, methods in paths.items() for method in methods]


OPERATIONS = _declared_operations()
KEYED = ("/v1/admin", "/v1/dashboard", "/v1/signup", "/v1/usage")
MODES = {"positive": GenerationMode.POSITIVE, "negative": GenerationMode.NEGATIVE}


@pytest.fixture(scope="module")
def schemas(auth_server: HostileServer, local_server: HostileServer) -> dict[str, Any]:
    return {"auth": _schema(auth_server), "local": _schema(local_server)}


def call(server: HostileServer, case: Any) -> Any:
    """Send a schemathesis case through the suite's client (the app's lifespan is the suite's own)."""
    kwargs = case.as_transport_kwargs(
        base_url="http://clipserve.test", headers=server.auth_headers(case.path)
    )
    content: bytes | None = None
    if "json" in kwargs:
        content = dumps(kwargs["json"])
    elif isinstance(kwargs.get("data"), str | bytes):
        data = kwargs["data"]
        content = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    server.errors.mark()
    return server.client.request(
        kwargs["method"], kwargs["url"], params=kwargs.get("params"), headers=kwargs.get("headers"),
        cookies=kwargs.get("cookies") or None, content=content,
    )  # fmt: skip


def test_the_fuzz_covers_every_operation_of_the_app(auth_server: HostileServer) -> None:
    """The operations parametrized below (found from the route modules) are exactly the app's."""
    app: Any = auth_server.client.app
    served = {f"{m.upper()} {p}" for p, methods in app.openapi()["paths"].items() for m in methods}
    assert served == set(OPERATIONS)


def _cases() -> list[Any]:
    return [
        pytest.param(mode, label, id=f"{mode}-{label}")
        for mode in ("auth", "local")
        for label in OPERATIONS
        if mode == "auth" or not label.split(" ", 1)[1].startswith(KEYED)
    ]


@pytest.mark.parametrize(("mode", "label"), _cases())
@settings(max_examples=examples(10))
@given(data=st.data())
def test_every_operation_answers_fuzzed_requests_without_a_5xx(
    request: pytest.FixtureRequest, schemas: dict[str, Any], mode: str, label: str, data: st.DataObject
) -> None:
    server: HostileServer = request.getfixturevalue(f"{mode}_server")
    operation = schemas[mode].find_operation_by_label(label)
    assert operation is not None, label
    generation = data.draw(st.sampled_from(list(MODES)), label="generation mode")
    case = data.draw(operation.as_strategy(MODES[generation]), label="case")
    response = call(server, case)
    what = f"[{mode}, {generation}] schemathesis case:\n{case.as_curl_command()[:1500]}"
    server.check(response, what)
    case.validate_response(response, checks=CHECKS)
    if case.path.startswith("/v1/admin"):
        server.ensure_keys()  # a fuzzed admin call may revoke our keys or take the user's credit: allowed
    server.check_still_serving(what)

"""CORS: off by default; with origins configured, preflights from the OpenAI JS client pass and real answers
(errors included) carry the headers a page needs; credentials never together with '*'."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clipserve.config import Settings
from tests.support import bearer, create_key, make_settings, running_app

pytestmark = pytest.mark.anyio

MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
PAGE = "https://app.example.com"
# What the OpenAI JS client (openai 6.x) sends on an embeddings call from a browser, besides Content-Type.
JS_CLIENT_HEADERS = (
    "authorization,content-type,x-stainless-arch,x-stainless-lang,x-stainless-os,x-stainless-package-version,"
    "x-stainless-retry-count,x-stainless-runtime,x-stainless-runtime-version,x-stainless-timeout,"
    "openai-organization,openai-project,idempotency-key"
)


def _preflight(method: str = "POST", headers: str = JS_CLIENT_HEADERS, origin: str = PAGE) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_cors_is_off_by_default(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        preflight = await client.options("/v1/embeddings", headers=_preflight())
        answer = await client.post(
            "/v1/embeddings", json={"input": "a cat", "model": MODEL}, headers={"Origin": PAGE}
        )
    assert preflight.status_code == 405
    assert answer.status_code == 200
    for response in (preflight, answer):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")], response.headers


async def test_a_preflight_from_a_listed_origin_allows_the_js_clients_request(tiny_runtime, tmp_path) -> None:
    async with running_app(tiny_runtime, tmp_path, cors_allowed_origins=[PAGE]) as (client, _):
        preflight = await client.options("/v1/embeddings", headers=_preflight())
        deleting = await client.options("/v1/collections/pets", headers=_preflight("DELETE", "authorization"))
    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == PAGE
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert set(JS_CLIENT_HEADERS.split(",")) <= allowed
    assert {"GET", "POST", "DELETE"} <= set(preflight.headers["access-control-allow-methods"].split(", "))
    assert "access-control-allow-credentials" not in preflight.headers
    assert deleting.status_code == 200


async def test_a_preflight_from_another_origin_or_with_an_unknown_header_is_refused(
    tiny_runtime, tmp_path: Path
) -> None:
    async with running_app(tiny_runtime, tmp_path, cors_allowed_origins=[PAGE]) as (client, _):
        other_site = await client.options("/v1/embeddings", headers=_preflight(origin="https://evil.example"))
        odd_header = await client.options("/v1/embeddings", headers=_preflight(headers="x-made-up"))
    assert other_site.status_code == 400
    assert "access-control-allow-origin" not in other_site.headers
    assert odd_header.status_code == 400


async def test_real_answers_carry_the_origin_and_expose_the_headers_a_page_reads(
    tiny_runtime, tmp_path: Path
) -> None:
    create_key(tmp_path)
    key = create_key(tmp_path, "page")
    async with running_app(tiny_runtime, tmp_path, auth="on", cors_allowed_origins=[PAGE]) as (client, _):
        ok = await client.post(
            "/v1/embeddings",
            json={"input": "a cat", "model": MODEL},
            headers={**bearer(key), "Origin": PAGE},
        )
        refused = await client.post(
            "/v1/embeddings", json={"input": "a cat", "model": MODEL}, headers={"Origin": PAGE}
        )
        other_site = await client.post(
            "/v1/embeddings",
            json={"input": "a cat", "model": MODEL},
            headers={**bearer(key), "Origin": "https://evil.example"},
        )
    assert ok.status_code == 200, ok.text
    assert refused.status_code == 401
    assert refused.json()["error"]["message"]
    for response in (ok, refused):  # a page reads the error's message and the request id too
        assert response.headers["access-control-allow-origin"] == PAGE
        exposed = {h.strip().lower() for h in response.headers["access-control-expose-headers"].split(",")}
        assert {"retry-after", "x-request-id", "x-ratelimit-remaining-requests"} <= exposed
        assert "access-control-allow-credentials" not in response.headers
    assert "access-control-allow-origin" not in other_site.headers  # the browser hides the answer from it


async def test_credentials_are_allowed_only_for_listed_origins(tiny_runtime, tmp_path: Path) -> None:
    async with running_app(
        tiny_runtime, tmp_path, cors_allowed_origins=[PAGE], cors_allow_credentials=True
    ) as (client, _):
        preflight = await client.options("/v1/models", headers=_preflight("GET", "authorization"))
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert preflight.headers["access-control-allow-credentials"] == "true"


def test_credentials_with_any_origin_are_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(
        ValidationError, match="cors_allow_credentials cannot be used with cors_allowed_origins"
    ):
        make_settings(tmp_path, cors_allowed_origins=["*"], cors_allow_credentials=True)
    assert Settings(data_dir=tmp_path, cors_allowed_origins=["*"]).cors_allowed_origins == ["*"]


@pytest.mark.parametrize("origin", ["https://app.example.com/", "app.example.com", "https://a.example/x"])
def test_an_origin_with_a_path_or_no_scheme_is_refused_at_start(tmp_path: Path, origin: str) -> None:
    with pytest.raises(ValidationError, match="is not an origin"):
        make_settings(tmp_path, cors_allowed_origins=[origin])

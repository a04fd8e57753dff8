"""The protocol edge through the real app: lone surrogates and blank texts are 400s naming the field (per item
in collection adds), usage dates at the calendar's ends are 200 or 400, admin values are bounded, and what
anyone may read (/metrics, /v1/models) tells nothing about revenue or the host's files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import open_clip
import pytest
from safetensors.torch import save_file

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import TINY_CONFIG, bearer, create_key, data_uri, encode_image, gradient_image, running_app

pytestmark = pytest.mark.anyio

IMAGE = data_uri(encode_image(gradient_image(64, 48)))
LONE = '"\\ud800"'  # as JSON text: what a client's encoder sends for a lone surrogate
JSON = {"content-type": "application/json"}
VECTOR = "[" + ", ".join(["0.5"] * 512) + "]"


def _error(response: Any, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# (route, raw JSON body, the param the 400 names)
SURROGATE_CASES = [
    ("/v1/embeddings", f'{{"input": {LONE}}}', "input"),
    ("/v1/embeddings", f'{{"input": ["a cat", {LONE}]}}', "input[1]"),
    ("/v1/embeddings", f'{{"input": [{{"type": "text", "text": {LONE}}}]}}', "input[0].text"),
    (
        "/v1/embeddings",
        f'{{"messages": [{{"role": "user", "content": [{{"type": "text", "text": {LONE}}}]}}]}}',
        "messages[0].content[0].text",
    ),
    ("/v1/embeddings", f'{{"input": "a cat", "user": {LONE}}}', "user"),
    ("/v1/rank", f'{{"query": {LONE}, "documents": ["a"]}}', "query"),
    ("/v1/rank", f'{{"query": "a", "documents": ["b", {LONE}]}}', "documents[1]"),
    ("/v1/rank", f'{{"query": "a", "documents": [{{"text": {LONE}}}]}}', "documents[0].text"),
    ("/v1/classify", f'{{"image": "{IMAGE}", "labels": ["cat", {LONE}]}}', "labels[1]"),
    ("/v1/classify", f'{{"image": "{IMAGE}", "labels": ["cat", "dog"], "template": {LONE}}}', "template"),
    (
        "/v1/classify",
        f'{{"inputs": "{IMAGE}", "parameters": {{"candidate_labels": ["cat", {LONE}]}}}}',
        "parameters.candidate_labels[1]",
    ),
    (
        "/v1/classify",
        f'{{"inputs": "{IMAGE}", "parameters": {{"candidate_labels": {LONE}}}}}',
        "parameters.candidate_labels",
    ),
    ("/v1/collections", f'{{"name": "c2", "description": {LONE}}}', "description"),
    ("/v1/collections/c/search", f'{{"query": {{"text": {LONE}}}}}', "query.text"),
    ("/v1/collections/c/search", f'{{"query": {{"id": {LONE}}}}}', "query.id"),
    ("/v1/collections/c/search", f'{{"query": {{"text": "a"}}, "filter": {{"tag": {LONE}}}}}', "filter.tag"),
    (
        "/v1/collections/c/search",
        f'{{"query": {{"text": "a"}}, "filter": {{"tag": {{"$in": ["x", {LONE}]}}}}}}',
        "filter.tag.$in[1]",
    ),
    # raw bytes of a surrogate (CESU-8), which json.loads also turns into one
    ("/v1/embeddings", b'{"input": ["a cat", "\xed\xa0\x80"]}', "input[1]"),
]


async def test_a_lone_surrogate_anywhere_is_a_400_naming_the_field(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 200
        for path, body, param in SURROGATE_CASES:
            response = await client.post(path, content=body, headers=JSON)
            error = _error(response)
            assert (error["param"], error["code"]) == (param, "invalid_unicode"), (path, body)
            assert "surrogate" in error["message"]
        # a surrogate pair (how ensure_ascii encoders send emoji) is valid text
        paired = await client.post(
            "/v1/embeddings", content='{"input": "a cat \\ud83d\\ude3a"}', headers=JSON
        )
        assert paired.status_code == 200, paired.text


async def test_a_lone_surrogate_fails_only_its_own_item_in_an_add(tiny_runtime: Any, tmp_path: Path) -> None:
    items = ", ".join([
        '{"id": "good-text", "text": "a cat"}',
        f'{{"id": {LONE}, "text": "a dog"}}',
        f'{{"id": "bad-text", "text": {LONE}}}',
        f'{{"id": "bad-value", "vector": {VECTOR}, "metadata": {{"tag": ["x", {LONE}]}}}}',
        f'{{"id": "bad-key", "vector": {VECTOR}, "metadata": {{{LONE}: 1}}}}',
        f'{{"id": "good-vector", "vector": {VECTOR}, "metadata": {{"city": "Z\\u00fcrich"}}}}',
    ])  # fmt: skip
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 200
        response = await client.post(
            "/v1/collections/c/items", content=f'{{"items": [{items}]}}', headers=JSON
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["errors"] is True
        statuses = [(s["id"], s["status"], (s.get("error") or {}).get("param")) for s in body["data"]]
        assert statuses == [
            ("good-text", "ok", None),
            ("", "error", "items[1].id"),
            ("bad-text", "error", "items[2].text"),
            ("bad-value", "error", "items[3].metadata.tag[1]"),
            ("bad-key", "error", "items[4].metadata"),
            ("good-vector", "ok", None),
        ]
        assert all(s["error"]["code"] == "invalid_unicode" for s in body["data"] if s["status"] == "error")
        for item_id in ("good-text", "good-vector"):
            assert (await client.get(f"/v1/collections/c/items/{item_id}")).status_code == 200
        assert (await client.get("/v1/collections/c/items/bad-text")).status_code == 404
        assert (await client.get("/v1/collections/c")).json()["item_count"] == 2


BLANK_TEXTS = [" ", "\x00", "\x00\x00\x00", " \t\r\n\u3000\u00a0", "\ufeff", "\u2028\x7f"]


@pytest.mark.parametrize("blank", BLANK_TEXTS)
async def test_a_blank_text_is_refused_like_an_empty_one(
    tiny_runtime: Any, tmp_path: Path, blank: str
) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        assert (await client.post("/v1/collections", json={"name": "c"})).status_code == 200
        for path, body, param in [
            ("/v1/embeddings", {"input": blank}, "input"),
            ("/v1/embeddings", {"input": ["a cat", blank]}, "input[1]"),
            ("/v1/embeddings", {"input": [{"type": "text", "text": blank}]}, "input[0].text"),
            ("/v1/rank", {"query": blank, "documents": ["a"]}, "query"),
            ("/v1/rank", {"query": "a", "documents": ["b", blank]}, "documents[1]"),
            ("/v1/classify", {"image": IMAGE, "labels": ["cat", blank]}, "labels[1]"),
            (
                "/v1/classify",
                {"inputs": IMAGE, "parameters": {"candidate_labels": ["cat", blank]}},
                "parameters.candidate_labels[1]",
            ),
            ("/v1/collections/c/search", {"query": {"text": blank}}, "query.text"),
        ]:
            error = _error(await client.post(path, json=body))
            assert (error["param"], error["code"]) == (param, "empty_text"), (path, error)
        added = await client.post(
            "/v1/collections/c/items",
            json={"items": [{"id": "blank", "text": blank}, {"id": "ok", "text": "a"}]},
        )
        assert [(s["status"], (s.get("error") or {}).get("code")) for s in added.json()["data"]] == [
            ("error", "empty_text"),
            ("ok", None),
        ]
        # the rule is open_clip's cleaning: a zero-width space or a soft hyphen survives it, so is a text
        assert (
            await client.post("/v1/embeddings", json={"input": ["\u200b", "\xad", "\x00a"]})
        ).status_code == 200


USAGE_ROUTES = ("/v1/usage", "/v1/admin/usage", "/v1/dashboard/billing/usage")
# query -> expected status on every usage route
USAGE_QUERIES = {
    "end_date=0001-01-01": 200,
    "start_date=0001-01-01&end_date=0001-01-01": 200,
    "start_date=0001-01-01&end_date=0001-12-31": 200,
    "end_date=9999-12-31": 200,
    "start_date=9999-12-31&end_date=9999-12-31": 200,
    "start_date=9999-01-01&end_date=9999-12-31": 200,
    "start_date=9999-12-31": 400,  # after today, the default end
    "start_date=0001-01-01": 400,  # to today: far more than the range cap
    "start_date=0001-01-01&end_date=9999-12-31": 400,
    "start_date=2025-02-01&end_date=2025-01-01": 400,
    "end_date=0000-01-01": 400,
    "end_date=10000-01-01": 400,
    "end_date=2025-02-30": 400,
    "end_date=99999999999999999999": 400,
    "end_date=-1": 400,
}


async def test_usage_dates_at_the_ends_of_the_calendar_are_200_or_400(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    admin = create_key(tmp_path, "root", credit="0", is_admin=True)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        for route in USAGE_ROUTES:
            for query, status in USAGE_QUERIES.items():
                response = await client.get(f"{route}?{query}", headers=bearer(admin))
                assert response.status_code == status, (route, query, response.text)
                if status == 400:
                    _error(response)
        for route in USAGE_ROUTES[:2]:  # the routes that take an account
            for account in ("99999999999999999999", "0", "-1"):
                _error(await client.get(f"{route}?account_id={account}", headers=bearer(admin)))
        ancient = (await client.get("/v1/usage?end_date=0001-01-01", headers=bearer(admin))).json()
        assert (ancient["start_date"], ancient["end_date"], ancient["data"]) == (
            "0001-01-01",
            "0001-01-01",
            [],
        )


async def test_admin_routes_bound_credit_limits_lifetimes_and_ids(tiny_runtime: Any, tmp_path: Path) -> None:
    admin = create_key(tmp_path, "root", credit="0", is_admin=True)
    huge = str(2**70)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        for body in [
            '{"name": "k", "credit": 1e30}',
            '{"name": "k", "credit": "1000000.01"}',
            '{"name": "k", "credit": "Infinity"}',
            '{"name": "k", "credit": NaN}',
            '{"name": "k", "requests_per_minute": 10000000}',
            '{"name": "k", "images_per_minute": 1e12}',
            '{"name": "k", "expires_in_days": Infinity}',
            '{"name": "k", "expires_in_days": NaN}',
            f'{{"name": "k", "account_id": {huge}}}',
        ]:
            response = await client.post("/v1/admin/keys", content=body, headers={**JSON, **bearer(admin)})
            _error(response)
        for body in ['{"name": "a", "credit": 2000000}', '{"name": "a", "credit": "-1"}']:
            _error(await client.post("/v1/admin/accounts", content=body, headers={**JSON, **bearer(admin)}))
        for body in ['{"credit": 1000001}', '{"credit": -1000001}', '{"credit": "-Infinity"}']:
            _error(
                await client.post(
                    "/v1/admin/accounts/1/grants", content=body, headers={**JSON, **bearer(admin)}
                )
            )
        _error(
            await client.post(
                f"/v1/admin/accounts/{huge}/grants", json={"credit": "1"}, headers=bearer(admin)
            )
        )
        _error(await client.delete(f"/v1/admin/keys/{huge}", headers=bearer(admin)))
        _error(await client.get(f"/v1/admin/keys?account_id={huge}", headers=bearer(admin)))
        # the largest values allowed work
        biggest = await client.post(
            "/v1/admin/keys",
            json={
                "name": "k",
                "credit": "1000000",
                "requests_per_minute": 1_000_000,
                "expires_in_days": 36500,
            },
            headers=bearer(admin),
        )
        assert biggest.status_code == 200, biggest.text
        assert biggest.json()["account"]["balance_micros"] == 1_000_000 * 1_000_000


async def test_metrics_publish_no_revenue_and_admins_still_read_it(tiny_runtime: Any, tmp_path: Path) -> None:
    user = create_key(tmp_path, "user", credit="1")
    admin = create_key(tmp_path, "root", credit="0", is_admin=True)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        charged = await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(user))
        cost = int(charged.headers["x-request-cost-micros"])
        assert cost > 0
        public = await client.get("/metrics")  # no key: Prometheus scrapes it as it is
        assert public.status_code == 200
        assert "clipserve_requests_total" in public.text
        assert "charged" not in public.text
        assert "micros" not in public.text
        assert (await client.get("/v1/admin/metrics")).status_code == 401
        assert (await client.get("/v1/admin/metrics", headers=bearer(user))).status_code == 403
        private = await client.get("/v1/admin/metrics", headers=bearer(admin))
        assert private.status_code == 200
        match = re.search(
            r'^clipserve_charged_micros_total\{endpoint="/v1/embeddings"\} (\S+)$', private.text, re.M
        )
        assert match is not None
        assert float(match.group(1)) == cost


async def test_the_model_card_shows_no_local_weights_path(tmp_path: Path) -> None:
    open_clip.add_model_config(TINY_CONFIG)
    model = open_clip.create_model(TINY_CONFIG.stem, pretrained=None)
    secret_dir = tmp_path / "srv-private-weights-dir"
    secret_dir.mkdir()
    checkpoint = secret_dir / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(checkpoint))
    runtime = ClipRuntime.load(
        RuntimeSpec(weights=str(checkpoint), architecture=str(TINY_CONFIG), device="cpu")
    )
    async with running_app(runtime, tmp_path, weights=str(checkpoint)) as (client, _):
        listing = await client.get("/v1/models")
        card = await client.get("/v1/models/CLIP-ViT-B-32-laion2B-s34B-b79K")
    for response in (listing, card):
        assert response.status_code == 200
        assert "srv-private-weights-dir" not in response.text
        assert str(tmp_path) not in response.text
    weights = listing.json()["data"][0]["weights"]
    assert weights["kind"] == "open_clip_file"
    assert weights["source"] == "local open_clip checkpoint"
    assert weights["fingerprint"] == runtime.weights.fingerprint

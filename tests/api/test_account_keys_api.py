"""The console's JSON through the real app: /v1/account, key management (session or admin only; the console
key hidden and unrevocable; revocation effective at once) and the account's recent requests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import bearer, create_key
from tests.web_accounts_support import session_headers, web_app

pytestmark = pytest.mark.anyio

ADDRESS = "127.0.0.1/32"
BODY = {"input": "a photo of a cat"}


async def _signed_in(app: Any, email: str) -> dict[str, str]:
    session, token = await app.state.context.web_accounts.sign_up(
        email, "correct horse battery", None, ADDRESS
    )
    return session_headers(token, session)


async def test_account_overview_names_the_login_limits_and_prices(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(
        tiny_runtime, tmp_path, rate_limit_requests_per_minute=600, rate_limit_images_per_minute=0
    ) as (client, app):
        headers = await _signed_in(app, "ada@example.org")
        response = await client.get("/v1/account", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "account"
        assert body["login"] == {"email": "ada@example.org", "is_admin": False}
        assert body["account"]["balance_micros"] == 1_000_000
        assert body["rate_limit"] == {"requests_per_minute": 600, "images_per_minute": None}
        assert body["prices"] == {"per_1k_images": 0.047, "per_1m_tokens": 0.01}


async def test_a_created_key_works_once_shown_and_stops_at_once_when_revoked(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        headers = await _signed_in(app, "ada@example.org")
        created = await client.post("/v1/account/keys", json={"name": "laptop"}, headers=headers)
        assert created.status_code == 200, created.text
        plaintext = created.json()["key"]
        key_id = created.json()["key_info"]["id"]
        assert (await client.post("/v1/embeddings", json=BODY, headers=bearer(plaintext))).status_code == 200
        listed = (await client.get("/v1/account/keys", headers=headers)).json()["data"]
        assert [(k["id"], k["name"], k["status"]) for k in listed] == [(key_id, "laptop", "active")]
        assert plaintext not in str(listed)
        revoked = await client.delete(f"/v1/account/keys/{key_id}", headers=headers)
        assert revoked.status_code == 200
        assert revoked.json()["status"] == "revoked"
        # the key was cached by the call above; revoking through this process drops it from the cache
        after = await client.post("/v1/embeddings", json=BODY, headers=bearer(plaintext))
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "api_key_revoked"


async def test_the_console_key_and_other_accounts_keys_are_not_found(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        accounts = app.state.context.accounts
        ada = await _signed_in(app, "ada@example.org")
        bob = await _signed_in(app, "bob@example.org")
        bobs_key = (await client.post("/v1/account/keys", json={"name": "bob's"}, headers=bob)).json()
        ada_account = (await client.get("/v1/account", headers=ada)).json()["account"]["id"]
        console = [k for k in accounts.list_keys(ada_account) if k.is_console]
        assert len(console) == 1
        for key_id in (console[0].id, bobs_key["key_info"]["id"], 999_999):
            response = await client.delete(f"/v1/account/keys/{key_id}", headers=ada)
            assert response.status_code == 404, key_id
            assert response.json()["error"]["code"] == "not_found"
        assert (await client.get("/v1/account/keys", headers=ada)).json()["data"] == []
        assert accounts.get_key(console[0].id).revoked_at is None
        assert accounts.get_key(bobs_key["key_info"]["id"]).revoked_at is None


async def test_a_plain_key_cannot_manage_keys_but_an_admin_key_can(tiny_runtime: Any, tmp_path: Path) -> None:
    plain = create_key(tmp_path, "plain")
    admin = create_key(tmp_path, "admin", is_admin=True)
    async with web_app(tiny_runtime, tmp_path) as (client, _app):
        for method, path, body in (
            ("GET", "/v1/account/keys", None),
            ("POST", "/v1/account/keys", {"name": "more"}),
            ("DELETE", "/v1/account/keys/1", None),
        ):
            response = await client.request(method, path, json=body, headers=bearer(plain))
            assert response.status_code == 403, (method, response.text)
            assert response.json()["error"]["code"] == "key_management_requires_console"
        created = await client.post("/v1/account/keys", json={"name": "more"}, headers=bearer(admin))
        assert created.status_code == 200
        assert created.json()["key_info"]["is_admin"] is False
        assert (await client.get("/v1/account", headers=bearer(plain))).status_code == 200


async def test_requests_list_the_accounts_charges_newest_first_with_their_request_ids(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    other = create_key(tmp_path, "other")
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        headers = await _signed_in(app, "ada@example.org")
        key = (await client.post("/v1/account/keys", json={"name": "script"}, headers=headers)).json()["key"]
        calls = [
            await client.post("/v1/embeddings", json=BODY, headers=headers),
            await client.post("/v1/embeddings", json={"input": ["a", "b"]}, headers=bearer(key)),
            await client.post("/v1/embeddings", json=BODY, headers=headers),
        ]
        foreign = await client.post("/v1/embeddings", json=BODY, headers=bearer(other))
        assert all(c.status_code == 200 for c in [*calls, foreign])
        response = await client.get("/v1/account/requests", params={"limit": 10}, headers=headers)
        assert response.status_code == 200
        rows = response.json()["data"]
        assert [r["request_id"] for r in rows] == [c.headers["x-request-id"] for c in reversed(calls)]
        assert [r["key_name"] for r in rows] == ["console", "script", "console"]
        assert [r["cost_micros"] for r in rows] == [
            int(c.headers["x-request-cost-micros"]) for c in reversed(calls)
        ]
        assert {r["endpoint"] for r in rows} == {"/v1/embeddings"}
        assert foreign.headers["x-request-id"] not in str(rows)
        limited = await client.get("/v1/account/requests", params={"limit": 1}, headers=headers)
        assert [r["request_id"] for r in limited.json()["data"]] == [calls[-1].headers["x-request-id"]]
        too_many = await client.get("/v1/account/requests", params={"limit": 201}, headers=headers)
        assert too_many.status_code == 400


async def test_local_mode_has_no_account_to_show(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, _app):  # no key yet: auth is off (auto)
        for path in ("/v1/account", "/v1/account/keys", "/v1/account/requests"):
            response = await client.get(path)
            assert response.status_code == 400, path
            assert response.json()["error"]["code"] == "auth_disabled"


async def test_admin_key_listing_marks_console_keys(tiny_runtime: Any, tmp_path: Path) -> None:
    admin = create_key(tmp_path, "admin", is_admin=True)
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        ada = await _signed_in(app, "ada@example.org")
        await client.post("/v1/account/keys", json={"name": "laptop"}, headers=ada)
        listed = (await client.get("/v1/admin/keys", headers=bearer(admin))).json()["data"]
        marks = sorted((key["name"], key["is_console"]) for key in listed)
        assert marks == [("admin", False), ("console", True), ("laptop", False)]

"""Cookie-authenticated /v1 calls through the real app: the session cookie counts only with the session's
X-CSRF-Token from this server's own origin; a session caller is charged to its account through the console
key; session and CSRF tokens never reach the logs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from clipserve.store.schema import api_keys, ledger
from tests.web_accounts_support import ORIGIN, session_headers, web_app

pytestmark = pytest.mark.anyio

ADDRESS = "127.0.0.1/32"
BODY = {"input": "a photo of a cat"}


async def _sign_up(app: Any, email: str = "ada@example.org") -> tuple[Any, str]:
    web = app.state.context.web_accounts
    session, token = await web.sign_up(email, "correct horse battery", "Ada", ADDRESS)
    return session, token


async def test_a_session_call_with_its_csrf_token_is_charged_to_its_account(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        session, token = await _sign_up(app)
        accounts = app.state.context.accounts
        before = accounts.get_account(session.account_id).balance_micros
        response = await client.post("/v1/embeddings", json=BODY, headers=session_headers(token, session))
        assert response.status_code == 200, response.text
        cost = int(response.headers["x-request-cost-micros"])
        assert cost > 0
        assert accounts.get_account(session.account_id).balance_micros == before - cost
        with app.state.context.database.read() as conn:
            row = conn.execute(
                select(ledger.c.account_id, api_keys.c.is_console, ledger.c.amount_micros)
                .join(api_keys, api_keys.c.id == ledger.c.key_id)
                .where(ledger.c.request_id == response.headers["x-request-id"])
            ).one()
        assert tuple(row) == (session.account_id, True, -cost)


async def test_the_cookie_without_the_right_csrf_token_or_from_another_site_is_ignored(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        session, token = await _sign_up(app)
        refused = {
            "no csrf token": session_headers(token, None),
            "wrong csrf token": session_headers(
                token, None, **{"X-CSRF-Token": session.csrf_token[:-1] + "x"}
            ),
            "foreign origin": session_headers(token, session, Origin="https://evil.example"),
            "other port": session_headers(token, session, Origin="http://clipserve.test:8080"),
            "other scheme": session_headers(token, session, Origin="https://clipserve.test"),
            "null origin": session_headers(token, session, Origin="null"),
            "cross-site fetch": session_headers(token, session, **{"Sec-Fetch-Site": "cross-site"}),
            "unknown session": session_headers(token[:-2] + "zz", session),
        }
        for name, headers in refused.items():
            response = await client.post("/v1/embeddings", json=BODY, headers=headers)
            assert response.status_code == 401, name
            assert response.json()["error"]["code"] == "missing_api_key", name
        allowed = {
            "same origin": session_headers(token, session, Origin=ORIGIN),
            "same-origin fetch": session_headers(token, session, **{"Sec-Fetch-Site": "same-origin"}),
            "no origin header": session_headers(token, session),
        }
        for name, headers in allowed.items():
            response = await client.post("/v1/embeddings", json=BODY, headers=headers)
            assert response.status_code == 200, (name, response.text)


async def test_a_signed_out_session_no_longer_authenticates(tiny_runtime: Any, tmp_path: Path) -> None:
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        session, token = await _sign_up(app)
        headers = session_headers(token, session)
        assert (await client.get("/v1/account", headers=headers)).status_code == 200
        await app.state.context.web_accounts.sign_out(token)
        assert (await client.get("/v1/account", headers=headers)).status_code == 401


async def test_a_bearer_key_wins_over_a_cookie(tiny_runtime: Any, tmp_path: Path) -> None:
    """An Authorization header is always the credential: a wrong key with a valid session is still 401."""
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        session, token = await _sign_up(app)
        headers = session_headers(token, session, Authorization="Bearer sk-clip-wrong")
        response = await client.post("/v1/embeddings", json=BODY, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


async def test_session_and_csrf_tokens_never_appear_in_logs(
    tiny_runtime: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with web_app(tiny_runtime, tmp_path, log_level="debug") as (client, app):
        web = app.state.context.web_accounts
        await web.sign_up("log@example.org", "correct horse battery", None, ADDRESS)
        session, token = await web.sign_in("log@example.org", "correct horse battery", ADDRESS)
        ok = await client.post("/v1/embeddings", json=BODY, headers=session_headers(token, session))
        assert ok.status_code == 200
        refused = session_headers(token, None, **{"X-CSRF-Token": session.csrf_token + "x"})
        assert (await client.post("/v1/embeddings", json=BODY, headers=refused)).status_code == 401
        await web.sign_out(token)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    assert any("web sign-up" in r.getMessage() for r in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        assert token not in text, record
        assert session.csrf_token not in text, record


async def test_revoking_the_console_key_locks_the_session_out_of_v1(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    """An operator's `clipserve keys revoke` of an account's console key ends its web access to /v1."""
    async with web_app(tiny_runtime, tmp_path) as (client, app):
        session, token = await _sign_up(app)
        accounts = app.state.context.accounts
        console = next(k for k in accounts.list_keys(session.account_id) if k.is_console)
        accounts.revoke_key(console.id)
        response = await client.post("/v1/embeddings", json=BODY, headers=session_headers(token, session))
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "console_key_revoked"

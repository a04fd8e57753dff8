"""Three real `clipserve serve` processes on one real PostgreSQL: they migrate an empty database together
(the migration is advisory-locked), then race on one account's credit, and no replica overdraws it.

The three servers start once for the module: the first test is their concurrent first start, the second their
race. Every charge is checked against hand arithmetic on the answers' usage ($0.047 per 1,000 images is 47
micro-dollars an image, $0.01 per million tokens is 1/100 micro-dollar a token, rounded up per request), not
against the server's own pricing code.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text

from clipserve.store.database import MIGRATIONS
from tests.support import (
    TINY_CONFIG,
    bearer,
    data_uri,
    encode_image,
    gradient_image,
    ledger_of,
    open_accounts,
)
from tests.system.conftest import ServerProcess, launch_server, wait_until_serving

REPLICAS = 3
REQUESTS_PER_REPLICA = 20
# The key the migration takes (store/database.py); in pg_locks an advisory lock on a bigint shows its low
# 32 bits as objid and objsubid 1.
MIGRATION_LOCK_ID = 0x636C6970
IMAGE_MICROS = 47  # $0.047 per 1,000 images
TOKEN_MICROS = Fraction(1, 100)  # $0.01 per 1,000,000 tokens
SEED = int(os.environ.get("CLIPSERVE_TEST_SEED", "17"))


def _launch(data_dir: Path, database_url: str) -> ServerProcess:
    """A replica, not waited for (wait_until_serving)."""
    return launch_server(
        data_dir, "--database-url", database_url, "--weights", "random", "--architecture", str(TINY_CONFIG),
        # auth on from the start: with auto, a server would serve (free) until it noticed the test's key
        "--auth", "on", "--rate-limit-requests-per-minute", "0", "--rate-limit-images-per-minute", "0",
    )  # fmt: skip


def _migration_waiters(admin_url: str, database: str) -> int:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND l.objid = %s AND l.objsubid = 1 AND NOT l.granted "
            "AND d.datname = %s",
            (MIGRATION_LOCK_ID & 0xFFFFFFFF, database),
        ).fetchone()
    assert row is not None
    return int(row[0])


def _has_table(conn: Any, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"public.{name}",)).fetchone()
    return bool(row[0])


class Replicas:
    def __init__(self, database_url: str, servers: list[ServerProcess]) -> None:
        self.database_url = database_url
        self.servers = servers


@pytest.fixture(scope="module")
def replicas(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    """Three servers started at once on one empty database. The test holds the migration's advisory lock
    until all three wait on it, so their migrations then race as closely as the lock lets them."""
    import psycopg

    from tests.postgres_server import fresh_database

    name = "clipserve_replicas"
    database_url = fresh_database(postgres_admin_url, name)
    root = tmp_path_factory.mktemp("replicas")
    servers: list[ServerProcess] = []
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            servers = [_launch(root / f"replica-{i}", database_url) for i in range(REPLICAS)]
            deadline = time.monotonic() + 180
            while _migration_waiters(postgres_admin_url, name) < REPLICAS:
                for server in servers:
                    if server.process.poll() is not None:
                        raise AssertionError(f"a replica exited before migrating:\n{server.log()}")
                if _has_table(holder, "alembic_version"):
                    raise AssertionError("a replica migrated while the migration's advisory lock was held")
                if time.monotonic() > deadline:
                    raise AssertionError("the replicas never waited on the migration's advisory lock")
                time.sleep(0.05)
            holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
            servers = [wait_until_serving(server, 180) for server in servers]
        except BaseException:
            for server in servers:
                server.stop()
            raise
    try:
        yield Replicas(database_url, servers)
    finally:
        for server in servers:
            server.stop()


def test_replicas_starting_at_once_on_an_empty_database_migrate_it_once(
    replicas: Replicas, postgres_admin_url: str
) -> None:
    import psycopg

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    heads = ScriptDirectory.from_config(config).get_heads()
    assert len(heads) == 1
    with psycopg.connect(replicas.database_url) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        tables = {
            row[0]
            for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        }
    assert versions == [(heads[0],)]
    assert {"accounts", "api_keys", "ledger", "holds", "instances"} <= tables, tables
    for server in replicas.servers:
        assert server.process.poll() is None
        log = server.log()
        assert "Traceback" not in log, log
        assert " ERROR " not in log, log


def _request_body(rng: random.Random, images: list[str], n: int) -> dict[str, Any]:
    """1 to 3 images, with a short caption half the time: its token bound stays under one micro-dollar, so
    the hold (the bound) equals the charge and the available credit never grows back during the race."""
    items: list[Any] = [{"image": rng.choice(images)} for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.5:
        items.append(f"caption number {n}")
    return {"input": items}


def _expected_cost(usage: dict[str, int]) -> int:
    return math.ceil(IMAGE_MICROS * usage["image_count"] + TOKEN_MICROS * usage["prompt_tokens"])


def _bound_cost(body: dict[str, Any]) -> int:
    """The hold of a request: its images, and two tokens per UTF-8 byte plus two per text, capped at 77."""
    images = sum(isinstance(item, dict) for item in body["input"])
    tokens = sum(min(77, 2 * len(t.encode()) + 2) for t in body["input"] if isinstance(t, str))
    return math.ceil(IMAGE_MICROS * images + TOKEN_MICROS * tokens)


def test_replicas_racing_on_one_account_never_overdraw_it(replicas: Replicas) -> None:
    rng = random.Random(SEED)
    credit = IMAGE_MICROS * 30 + 7  # about a sixth of what the 60 requests would cost
    ((account_id, key),) = open_accounts(replicas.database_url, [credit])
    images = [data_uri(encode_image(gradient_image(48, 40, seed=i))) for i in range(4)]
    bodies = [_request_body(rng, images, n) for n in range(REPLICAS * REQUESTS_PER_REPLICA)]

    async def race() -> list[httpx.Response]:
        clients = [httpx.AsyncClient(base_url=s.base_url, timeout=120) for s in replicas.servers]
        try:
            return await asyncio.gather(
                *(
                    clients[n % REPLICAS].post("/v1/embeddings", json=body, headers=bearer(key))
                    for n, body in enumerate(bodies)
                )
            )
        finally:
            for client in clients:
                await client.aclose()

    responses = asyncio.run(race())
    context = f"(seed {SEED}; rerun with CLIPSERVE_TEST_SEED={SEED})"
    answered = [(body, r) for body, r in zip(bodies, responses, strict=True) if r.status_code == 200]
    refused = [(body, r) for body, r in zip(bodies, responses, strict=True) if r.status_code != 200]
    for _, response in refused:
        assert response.status_code == 429, f"{response.status_code} {response.text} {context}"
        assert response.json()["error"]["code"] == "insufficient_quota", context
    assert answered, f"nothing was answered {context}"
    assert refused, f"the race must run out of credit {context}"

    costs = {}
    for body, response in answered:
        usage = response.json()["usage"]
        assert usage["image_count"] == sum(isinstance(item, dict) for item in body["input"])
        costs[response.headers["x-request-id"]] = _expected_cost(usage)
        assert int(response.headers["x-request-cost-micros"]) == costs[response.headers["x-request-id"]]
    ledger = ledger_of(replicas.database_url)
    try:
        charges = ledger.charges(account_id)
        audit = ledger.audit(account_id)
        with ledger.db.read() as conn:
            holds = conn.execute(text("SELECT count(*) FROM holds")).scalar_one()
    finally:
        ledger.db.close()
    assert sorted((rid, cost) for rid, _, cost in charges) == sorted(costs.items()), context
    assert audit.consistent, audit
    assert audit.balance_micros == credit - sum(costs.values()), context
    assert audit.balance_micros >= 0, context
    assert holds == 0
    # The holds equal the charges here, so the credit left never grows during the race: every refused
    # request really was short of it (refused only when a replica saw less than its bound available).
    assert audit.balance_micros < min(_bound_cost(body) for body, _ in refused), context

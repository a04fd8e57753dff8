"""What authentication, metering and the ledger add to a request, against the same app with auth off.

    python bench/billing_overhead.py [--database-url postgresql://...] [--requests 400] [--clients 8]

Each scenario serves the same text request (one short prompt, tiny model, in-process ASGI client, so the
numbers are the service's own overhead, not the network's or the model's): auth off (local mode), auth on
with the embedded SQLite ledger, the same with an Idempotency-Key, and, with --database-url, on Postgres.
req/s is completed requests / wall time of the timed run (from the first request sent to the last answer).
It also times the ledger alone (admit + settle per request, one thread: wall and CPU ms per pair) and one
fsync of a small file in the same directory as the SQLite database (median of 50), the disk's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from clipserve.store.accounts import AccountStore
from clipserve.store.database import Database
from clipserve.store.ledger import AdmissionRequest, Charge, LedgerStore
from common import cpu_description

TINY = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "clipserve-tiny.json"


async def _run_scenario(
    runtime: ClipRuntime, settings: Settings, key: str | None, idempotent: bool, requests: int, clients: int
) -> tuple[list[float], float]:
    """(per-request latencies, wall seconds of the timed run) of `requests` requests from `clients` clients."""
    app = create_app(settings, runtime)
    latencies: list[float] = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as client:
            for _ in range(1000):
                if (await client.get("/ready")).status_code == 200:
                    break
                await asyncio.sleep(0.01)
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            queue = list(range(requests))

            async def worker() -> None:
                while queue:
                    queue.pop()
                    extra = {"Idempotency-Key": uuid.uuid4().hex} if idempotent else {}
                    started = time.perf_counter()
                    response = await client.post(
                        "/v1/embeddings", json={"input": "a photo of a cat"}, headers={**headers, **extra}
                    )
                    latencies.append(time.perf_counter() - started)
                    assert response.status_code == 200, response.text

            await worker()  # warm-up
            latencies.clear()
            queue = list(range(requests))
            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            wall = time.perf_counter() - started
    return latencies, wall


def _ledger_only(url: str, rounds: int) -> tuple[float, float]:
    """(admit+settle pairs per second, CPU seconds of this process per pair), one thread."""
    database = Database(url)
    database.migrate()
    accounts, ledger = AccountStore(database), LedgerStore(database)
    account, key, _ = accounts.open_account("bench-ledger", 10**12)
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(rounds):
        charge_id = f"bench_{uuid.uuid4().hex}"
        ledger.admit(AdmissionRequest(charge_id, account.id, key.id, 100, 0, None, None))
        ledger.settle(Charge(charge_id, f"req_{i}", account.id, key.id, "/bench", 0, 5, 1))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    database.close()
    return rounds / elapsed, cpu / rounds


def _fsync_ms(directory: Path, rounds: int = 50) -> float:
    """Median time of write(4 KiB) + fsync on a file in `directory` (the disk's cost of a durable commit)."""
    path = directory / "fsync-probe"
    samples = []
    with path.open("wb") as probe:
        for _ in range(rounds):
            probe.write(os.urandom(4096))
            probe.flush()
            started = time.perf_counter()
            os.fsync(probe.fileno())
            samples.append(time.perf_counter() - started)
    path.unlink()
    return statistics.median(samples) * 1000


def _scenario(url: str, data_dir: Path) -> tuple[Settings, str]:
    settings = Settings(
        data_dir=data_dir,
        weights="random",
        database_url=url,
        rate_limit_requests_per_minute=0,
        batch_wait_ms=0,
    )
    database = Database(url)
    database.migrate()
    _, _, key = AccountStore(database).open_account("bench", 10**12)
    database.close()
    return settings, key


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", help="also measure on this (empty, disposable) Postgres database")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    runtime = ClipRuntime.load(RuntimeSpec(weights="random", architecture=str(TINY), device="cpu"))
    print(f"CPU: {cpu_description()}; {args.requests} requests from {args.clients} concurrent clients")
    rows: list[tuple[str, tuple[list[float], float]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        off = Settings(data_dir=root / "off", weights="random", batch_wait_ms=0)
        rows.append(
            (
                "auth off (local mode)",
                asyncio.run(_run_scenario(runtime, off, None, False, args.requests, args.clients)),
            )
        )
        sqlite_url = f"sqlite:///{root / 'on' / 'clipserve.db'}"
        settings, key = _scenario(sqlite_url, root / "on")
        rows.append(
            (
                "auth on, SQLite",
                asyncio.run(_run_scenario(runtime, settings, key, False, args.requests, args.clients)),
            )
        )
        rows.append(
            (
                "auth on, SQLite, Idempotency-Key",
                asyncio.run(_run_scenario(runtime, settings, key, True, args.requests, args.clients)),
            )
        )
        ledgers: list[tuple[str, tuple[float, float]]] = [("SQLite", _ledger_only(sqlite_url, 300))]
        fsync_ms = _fsync_ms(root / "on")
        if args.database_url:
            pg_settings, pg_key = _scenario(args.database_url, root / "pg")
            rows.append(
                (
                    "auth on, Postgres",
                    asyncio.run(
                        _run_scenario(runtime, pg_settings, pg_key, False, args.requests, args.clients)
                    ),
                )
            )
            ledgers.append(("Postgres", _ledger_only(args.database_url, 300)))
    base = statistics.median(rows[0][1][0])
    base_rate = args.requests / rows[0][1][1]
    print(
        f"\n{'scenario':<36} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p50 added ms':>13} {'throughput':>11}"
    )
    for name, (latencies, wall) in rows:
        ordered = sorted(latencies)
        p50, p99 = statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]
        rate = len(latencies) / wall  # completed requests / wall time
        print(
            f"{name:<36} {rate:>8.0f} {p50 * 1000:>8.1f} {p99 * 1000:>8.1f} {(p50 - base) * 1000:>13.1f} {rate / base_rate:>10.2f}x"
        )
    print()
    for name, (rate, cpu_s) in ledgers:
        print(
            f"ledger alone ({name}): {rate:.0f} admit+settle pairs/s, {1000 / rate:.2f} ms per request "
            f"({cpu_s * 1000:.2f} ms of it CPU in this process)"
        )
    print(f"fsync of a 4 KiB write beside the SQLite database: {fsync_ms:.2f} ms (median of 50)")


if __name__ == "__main__":
    main()

"""SIGKILL the server while a client adds items in a loop: after a restart, every acknowledged item is
there and searchable, and of each unacknowledged request either all items or none exist, each complete."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from tests.support import TINY_CONFIG
from tests.system.conftest import start_server

BATCH = 8
SEED_VARIABLE = "CRASH_TEST_SEED"  # set it to replay a failing run's kill timing


def _seeded_random() -> tuple[int, random.Random]:
    """The kill timing is random; print the seed (shown with a failure's output) and allow replaying it."""
    seed = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**32))
    print(f"{SEED_VARIABLE}={seed}")
    return seed, random.Random(seed)


def _vectors(batch: int) -> list[list[float]]:
    v = np.random.default_rng(batch).standard_normal((BATCH, 512))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).tolist()


def _batch(batch: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = [
        {"id": f"b{batch}-{k}", "vector": vector, "metadata": {"batch": batch, "k": k}}
        for k, vector in enumerate(_vectors(batch))
    ]
    items[0] = {"id": f"b{batch}-0", "text": f"caption number {batch}", "metadata": {"batch": batch, "k": 0}}
    return items


def test_acknowledged_items_survive_sigkill_and_nothing_is_half_written(tmp_path: Path) -> None:
    args = ("--weights", "random", "--architecture", str(TINY_CONFIG))
    server = start_server(tmp_path, *args)
    httpx.post(f"{server.base_url}/v1/collections", json={"name": "c"}, timeout=30).raise_for_status()
    seed, rng = _seeded_random()
    acknowledged: list[int] = []
    attempted: list[int] = []
    failures: list[str] = []  # anything but a 200 without errors, or a connection that died before the kill
    stop = threading.Event()
    killed = threading.Event()  # set just before the SIGKILL: only then may a connection die

    def client() -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=30) as http:
                for batch in range(100_000):
                    if stop.is_set():
                        return
                    attempted.append(batch)
                    try:
                        response = http.post("/v1/collections/c/items", json={"items": _batch(batch)})
                    except httpx.TransportError as exc:
                        if not killed.is_set():
                            failures.append(f"batch {batch}: connection failed before the kill: {exc!r}")
                        return  # the server died under this request: no answer
                    if response.status_code != 200 or response.json().get("errors") is not False:
                        failures.append(f"batch {batch}: {response.status_code} {response.text[:500]}")
                        return
                    acknowledged.append(batch)
        except Exception as exc:  # every failure in the client thread fails the test
            failures.append(f"client: {exc!r}")

    thread = threading.Thread(target=client)
    thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 10 and not failures and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0, 0.5))  # the kill lands at a random (seeded) point of the adds
    killed.set()
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    stop.set()
    thread.join(30)
    assert not thread.is_alive(), f"the client hung (seed {seed})"
    assert not failures, f"seed {seed}: " + "\n".join(failures)
    assert len(acknowledged) >= 10

    restarted = start_server(tmp_path, *args)
    try:
        with httpx.Client(base_url=restarted.base_url, timeout=30) as http:
            for batch in attempted:
                present = []
                for k in range(BATCH):
                    response = http.get(
                        f"/v1/collections/c/items/b{batch}-{k}", params={"include_vector": "true"}
                    )
                    if response.status_code == 200:
                        item = response.json()
                        assert item["metadata"] == {"batch": batch, "k": k}, "a half-written item"
                        assert len(item["vector"]) == 512
                        present.append(item)
                    else:
                        assert response.status_code == 404
                if batch in acknowledged:
                    assert len(present) == BATCH, f"acknowledged batch {batch} lost items"
                else:
                    assert len(present) in (0, BATCH), f"unacknowledged batch {batch} is partly written"
            for batch in rng.sample(acknowledged, min(5, len(acknowledged))):
                vector = _vectors(batch)[3]
                hits = http.post(
                    "/v1/collections/c/search", json={"query": {"vector": vector}, "top_k": 1}
                ).json()
                assert hits["results"][0]["id"] == f"b{batch}-3"
            count = http.get("/v1/collections/c").json()["item_count"]
            assert count % BATCH == 0
            assert count >= len(acknowledged) * BATCH
    finally:
        restarted.stop()

"""Helpers the tests share: photos, image encoders, and an in-process app with a real lifespan."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor, Future
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import skimage
from PIL import Image

from clipserve.api.app import create_app
from clipserve.config import Settings
from clipserve.runtime.model import ClipRuntime

TINY_CONFIG = Path(__file__).parent / "fixtures" / "clipserve-tiny.json"
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
# The parity set: colour photos, a grayscale one and an RGBA one.
PHOTO_FILES = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "camera": "camera.png",  # L
    "horse": "horse.png",  # RGBA
}
TEXTS = [
    "a photo of an astronaut",
    "a cat lying on a blanket",
    "a cup of coffee",
    "a rocket on the launch pad",
    "x",
    "A very long caption " + "that keeps going and going " * 20,
    "emoji 🐱 and ünïcödé",
]


def photo_path(name: str) -> Path:
    return SKIMAGE_DATA / PHOTO_FILES[name]


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def encode_image(image: Image.Image, fmt: str = "PNG", **save_args: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save_args)
    return buffer.getvalue()


def gradient_image(width: int = 320, height: int = 240, seed: int = 0) -> Image.Image:
    """A deterministic, non-trivial RGB image."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    base = np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2)
    noise = rng.integers(0, 40, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    # The heap freeze's full collection costs ~0.3 s per app start in a test process (hundreds of apps, one big
    # heap); tests/api/test_heap_freeze.py tests it, and every server process the system tests start uses it.
    values: dict[str, Any] = {
        "data_dir": tmp_path, "weights": "random", "batch_wait_ms": 2.0, "freeze_startup_heap": False,
    }  # fmt: skip
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_app(
    runtime: ClipRuntime, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app (lifespan included) around `runtime`, with a client; waits until /ready."""
    app = create_app(make_settings(tmp_path, **overrides), runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://clipserve.test", timeout=60
        ) as client:
            await wait_until_ready(client, READY_TIMEOUT_S)
            yield client, app


READY_TIMEOUT_S = 60.0  # the tiny model warms up in well under a second; a full ViT-B-32 in a few


UNTIL_TIMEOUT_S = 30.0  # generous: CI runs on two loaded cores


async def until(
    condition: Callable[[], object], what: str = "the condition", timeout_s: float = UNTIL_TIMEOUT_S
) -> None:
    """Yield to the app until `condition()` holds (state the service owns, with no event to wait on); fail
    naming `what` after timeout_s. Tests wait for a state with this, never with a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting until {what}"
        await asyncio.sleep(0.005)


def wait_for(
    condition: Callable[[], object], what: str = "the condition", timeout_s: float = UNTIL_TIMEOUT_S
) -> None:
    """`until` for code outside an event loop (threads, server processes): poll `condition()` until it holds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting until {what}"
        time.sleep(0.005)


def occupy(pool: Executor, release: threading.Event, timeout_s: float = 60.0) -> Future[bool]:
    """Hold one of `pool`'s threads (the model thread: "the model is busy") until `release` is set or timeout_s
    passes. Returns once the thread is held, so whatever is submitted afterwards waits in the pool's queue."""
    held = threading.Event()

    def hold() -> bool:
        held.set()
        return release.wait(timeout_s)

    future = pool.submit(hold)
    assert held.wait(timeout_s), "the pool's thread never came free"
    return future


async def wait_until_ready(client: httpx.AsyncClient, timeout_s: float) -> None:
    """Poll /ready until it answers 200; fail (AssertionError naming the last answer) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        answer = await client.get("/ready")
        if answer.status_code == 200:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"the app never became ready: /ready still answered {answer.status_code} {answer.text} "
                f"after {timeout_s:g} s (did the warm-up hang or fail? see the log above)"
            )
        await asyncio.sleep(0.01)


def vectors(body: dict[str, Any]) -> np.ndarray:
    """The embeddings of a response body (float or base64), in index order."""
    rows = sorted(body["data"], key=lambda d: d["index"])
    out = []
    for row in rows:
        value = row["embedding"]
        if isinstance(value, str):
            out.append(np.frombuffer(base64.b64decode(value), dtype="<f4"))
        else:
            out.append(np.asarray(value, dtype=np.float32))
    return np.stack(out)


def create_key(data_dir: Path, name: str = "user", credit: str = "1", **options: Any) -> str:
    """An account with one key and `credit` dollars, in the app's default database; returns the key."""
    from clipserve.service.pricing import dollars_to_micros
    from clipserve.store.accounts import AccountStore
    from clipserve.store.database import Database
    from clipserve.store.records import KeyOptions

    database = Database(f"sqlite:///{data_dir / 'clipserve.db'}")
    try:
        database.migrate()
        _, _, plaintext = AccountStore(database).open_account(
            name, dollars_to_micros(credit), KeyOptions(**options)
        )
        return plaintext
    finally:
        database.close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def open_accounts(database_url: str, credits_micros: list[int], **options: Any) -> list[tuple[int, str]]:
    """One account per credit amount, each with one key; returns (account id, key) pairs."""
    from clipserve.store.accounts import AccountStore
    from clipserve.store.database import Database
    from clipserve.store.records import KeyOptions

    database = Database(database_url)
    try:
        database.migrate()
        store = AccountStore(database)
        opened = []
        for i, credit in enumerate(credits_micros):
            account, _, key = store.open_account(f"account-{i}", credit, KeyOptions(**options))
            opened.append((account.id, key))
        return opened
    finally:
        database.close()


def ledger_of(database_url: str) -> Any:
    """A LedgerStore on its own connection pool (close its .db when done)."""
    from clipserve.store.database import Database
    from clipserve.store.ledger import LedgerStore

    return LedgerStore(Database(database_url))

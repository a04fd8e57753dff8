"""A request that fails costs nothing: a server error in the model run, or a cancel while the model runs,
leaves the balance and the ledger as they were and releases the request's credit hold (the real app, the
tiny model, on SQLite and on a real PostgreSQL).

The account holds exactly one image's credit (47 micro-dollars): after the failed request, one image must
still be answered and charged 47, which it could not be if the failed request had kept its hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from sqlalchemy import text

from clipserve.runtime.model import ClipRuntime, RuntimeSpec
from tests.support import (
    TINY_CONFIG,
    bearer,
    data_uri,
    encode_image,
    gradient_image,
    open_accounts,
    running_app,
)

pytestmark = pytest.mark.anyio

IMAGE_MICROS = 47  # $0.047 per 1,000 images
BODY = {"input": [{"image": data_uri(encode_image(gradient_image(64, 48)))}]}


class FaultyRuntime(ClipRuntime):
    """The real tiny model, whose next image batch can be made to fail, or to wait until told to go on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_next = threading.Event()
        self.hold_next = threading.Event()
        self.entered = threading.Event()
        self.proceed = threading.Event()

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        if self.fail_next.is_set():
            self.fail_next.clear()
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        if self.hold_next.is_set():
            self.hold_next.clear()
            self.entered.set()
            assert self.proceed.wait(60)
        return super().encode_images(pixels)


@pytest.fixture(scope="module")
def faulty_runtime() -> FaultyRuntime:
    runtime = FaultyRuntime.load(
        RuntimeSpec(weights="random", architecture=str(TINY_CONFIG), device="cpu", seed=0)
    )
    assert isinstance(runtime, FaultyRuntime)
    return runtime


def _money(app: Any, account_id: int) -> tuple[int, int, list[tuple[str | None, str | None, int]], int]:
    """(balance, charged, ledger charges, open holds), read from the database."""
    ledger = app.state.context.ledger
    audit = ledger.audit(account_id)
    assert audit.consistent, audit
    with ledger.db.read() as conn:
        holds = int(conn.execute(text("SELECT count(*) FROM holds")).scalar_one())
    return audit.balance_micros, audit.charged_micros, ledger.charges(account_id), holds


async def _one_image_is_still_affordable(client: Any, app: Any, key: str, account_id: int) -> None:
    good = await client.post("/v1/embeddings", json=BODY, headers=bearer(key))
    assert good.status_code == 200, good.text
    assert int(good.headers["x-request-cost-micros"]) == IMAGE_MICROS
    assert _money(app, account_id) == (
        0,
        IMAGE_MICROS,
        [(good.headers["x-request-id"], None, IMAGE_MICROS)],
        0,
    )


async def test_a_server_error_in_the_model_run_costs_nothing_and_releases_its_hold(
    faulty_runtime: FaultyRuntime, tmp_path: Path, database_url: str
) -> None:
    ((account_id, key),) = open_accounts(database_url, [IMAGE_MICROS])
    async with (
        running_app(faulty_runtime, tmp_path, database_url=database_url) as (client, app),
        # as a server answers: the 500 goes out, and the error is not raised again into the test
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://clipserve.test",
        ) as server_side,
    ):
        faulty_runtime.fail_next.set()
        failed = await server_side.post("/v1/embeddings", json=BODY, headers=bearer(key))
        assert not faulty_runtime.fail_next.is_set(), "the model never ran"
        assert failed.status_code == 500, failed.text
        error = failed.json()["error"]
        assert (error["type"], error["code"]) == ("server_error", "internal_error")
        assert "x-request-cost-micros" not in failed.headers
        assert _money(app, account_id) == (IMAGE_MICROS, 0, [], 0)
        await _one_image_is_still_affordable(client, app, key, account_id)


async def test_a_request_cancelled_while_the_model_runs_costs_nothing_and_releases_its_hold(
    faulty_runtime: FaultyRuntime, tmp_path: Path, database_url: str
) -> None:
    ((account_id, key),) = open_accounts(database_url, [IMAGE_MICROS])
    async with running_app(faulty_runtime, tmp_path, database_url=database_url) as (client, app):
        faulty_runtime.entered.clear()
        faulty_runtime.proceed.clear()
        faulty_runtime.hold_next.set()
        request = asyncio.create_task(client.post("/v1/embeddings", json=BODY, headers=bearer(key)))
        try:
            assert await asyncio.to_thread(faulty_runtime.entered.wait, 60), "the model never ran"
            assert _money(app, account_id) == (IMAGE_MICROS, 0, [], 1)  # admitted: its hold is taken
            # What uvicorn does to a request still running when the shutdown grace period ends (the ASGI
            # transport runs the app in this task, so the cancel reaches the route while the model runs).
            request.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                answer = await request
                assert answer.status_code == 503, answer.text  # "retry": it was not charged
        finally:
            faulty_runtime.proceed.set()  # the model's thread finishes its batch for nobody
        assert _money(app, account_id) == (IMAGE_MICROS, 0, [], 0)
        await _one_image_is_still_affordable(client, app, key, account_id)

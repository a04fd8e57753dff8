"""Hostile JSON bodies: refused before they are read or parsed, never on the event loop (issue 10, item 2)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import bearer, create_key, running_app

pytestmark = pytest.mark.anyio

HEADERS = {"content-type": "application/json"}


def assert_error(response: Any, status: int, code: str, param: str | None = "body") -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == (code, param)


def many_keys(count: int) -> bytes:
    return ("{" + ",".join(f'"k{i}":0' for i in range(count)) + "}").encode()


class CountingBody:
    """A streamed request body that counts how many of its chunks the server pulled."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.chunks = total // chunk
        self.chunk = b'{"input": "' + b"a" * (chunk - 11)
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.chunk


async def test_without_a_key_the_body_is_not_read_once_keys_exist(tiny_runtime: Any, tmp_path: Path) -> None:
    create_key(tmp_path)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        body = CountingBody(8 * 1024 * 1024)
        response = await client.post("/v1/embeddings", content=body.__aiter__(), headers=HEADERS)
    assert response.status_code == 401
    assert body.pulled <= 1, f"{body.pulled} chunks of a 128-chunk body were read before the 401"


async def test_routes_without_a_key_read_only_a_small_body(tiny_runtime: Any, tmp_path: Path) -> None:
    create_key(tmp_path)
    async with running_app(tiny_runtime, tmp_path, signup_enabled=True) as (client, _):
        padded = {"name": "someone", "padding": "x" * 100_000}
        response = await client.post("/v1/signup", json=padded)
        fine = await client.post("/v1/signup", json={"name": "someone"})
    assert_error(response, 413, "request_too_large", param=None)
    assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (many_keys(100_001), 413, "json_too_many_keys"),
        (b'{"input": [' + b",".join([b'"x"'] * 200_001) + b"]}", 413, "json_too_many_strings"),
        (b'{"input": [' + b",".join([b"0"] * 500_001) + b"]}", 413, "json_too_many_values"),
        (b'{"input": ' + b"[" * 40 + b"]" * 40 + b"}", 400, "json_too_deep"),
        (b'{"input": [' + b",".join([b"1" * 100] * 20) + b"]}", 400, "invalid_json"),
        (b'{"input": "x",' + b" " * 2000 + b'"user": "u"}', 400, "invalid_json"),
        (b'{"input": "' + b"a" * 5000, 400, "invalid_json"),
        (b'{"input": "' + b"a" * 5000 + b'\x01"}', 400, "invalid_json"),
        (b'["x"]', 400, "invalid_json"),
        (b"", 400, "invalid_json"),
    ],
    ids=[
        "keys",
        "strings",
        "values",
        "depth",
        "long-numbers",
        "whitespace",
        "unclosed",
        "control",
        "array",
        "empty",
    ],
)
async def test_hostile_json_is_refused_in_the_error_shape(
    tiny_runtime: Any, tmp_path: Path, body: bytes, status: int, code: str
) -> None:
    key = create_key(tmp_path)
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        response = await client.post("/v1/embeddings", content=body, headers={**HEADERS, **bearer(key)})
        still_fine = await client.post("/v1/embeddings", json={"input": "a cat"}, headers=bearer(key))
    assert_error(response, status, code)
    assert still_fine.status_code == 200


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "key"])
async def test_a_34_mb_body_of_keys_does_not_stall_the_event_loop(
    tiny_runtime: Any, tmp_path: Path, with_key: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 4.8 s of /health latency on this kind of machine (json.loads on the loop, before auth). Now the
    body is parsed (and its keys counted) only on the JSON threads, and only once the caller is known: the
    event loop never runs the parse, and /health answers throughout."""
    import clipserve.api.bodies as bodies

    parsed_on: list[str] = []
    real_parse = bodies.parse_json

    def recorded(*args: Any) -> Any:
        parsed_on.append(threading.current_thread().name)
        return real_parse(*args)

    monkeypatch.setattr(bodies, "parse_json", recorded)
    key = create_key(tmp_path)
    body = many_keys(2_500_000)
    headers = {**HEADERS, **(bearer(key) if with_key else {})}
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        health: list[int] = []
        attack = asyncio.create_task(client.post("/v1/embeddings", content=body, headers=headers))
        while not attack.done():
            health.append((await client.get("/health")).status_code)
            await asyncio.sleep(0.005)
        response = await attack
    if with_key:
        assert_error(response, 413, "json_too_many_keys")
        assert len(parsed_on) == 1
        assert parsed_on[0].startswith("clipserve-json"), parsed_on
    else:
        assert response.status_code == 401
        assert parsed_on == []  # refused before its body was parsed
    assert health
    assert set(health) == {200}


async def test_large_bodies_are_parsed_on_the_json_threads_and_still_answer(
    tiny_runtime: Any, tmp_path: Path
) -> None:
    texts = [f"a photo of thing number {i:06}" for i in range(2048)]  # 68 KB: over the inline 64 KiB
    long_text = "a dog " * 3000  # one long string, decoded apart from the rest
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        batch = await client.post("/v1/embeddings", json={"input": texts})
        long = await client.post(
            "/v1/embeddings", content=json.dumps({"input": [long_text, "é\n"]}), headers=HEADERS
        )
        idempotent = await client.post(
            "/v1/embeddings", json={"input": texts}, headers={"Idempotency-Key": "k1"}
        )
        json_threads = [t.name for t in threading.enumerate() if t.name.startswith("clipserve-json")]
    assert batch.status_code == 200, batch.text
    assert len(batch.json()["data"]) == 2048
    assert long.status_code == 200, long.text
    assert idempotent.status_code == 200
    assert json_threads  # the large bodies were parsed there, not on the event loop


async def test_the_openapi_schema_still_shows_every_request_body(tiny_runtime: Any, tmp_path: Path) -> None:
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        schema = (await client.get("/openapi.json")).json()
    schemas = schema["components"]["schemas"]
    for path, model in [
        ("/v1/embeddings", "EmbeddingRequest"),
        ("/v1/rank", "RankRequest"),
        ("/v1/signup", "SignupRequest"),
        ("/v1/collections/{name}/items", "AddItemsRequest"),
    ]:
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{model}"}
    refs = json.dumps(schema).split('"$ref": "#/components/schemas/')[1:]
    assert {ref.split('"')[0] for ref in refs} <= set(schemas)  # no dangling reference (classify's were)


async def test_the_items_of_a_large_body_are_parsed_off_the_event_loop_and_a_small_ones_inline(
    tiny_runtime: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clipserve.api.endpoint_calls as endpoint_calls

    threads: list[str] = []

    def spy(real: Any) -> Any:
        def recorded(*args: Any) -> Any:
            threads.append(threading.current_thread().name)
            return real(*args)

        return recorded

    monkeypatch.setattr(endpoint_calls, "parse_request_items", spy(endpoint_calls.parse_request_items))
    monkeypatch.setattr(endpoint_calls, "parse_items", spy(endpoint_calls.parse_items))
    many = [f"a photo of thing number {i:06}" for i in range(2048)]  # ~68 KB
    async with running_app(tiny_runtime, tmp_path) as (client, _):
        assert (await client.post("/v1/embeddings", json={"input": many})).status_code == 200
        assert (
            await client.post("/v1/rank", json={"query": "a", "documents": many[:1000]})
        ).status_code == 200
        assert (await client.post("/v1/embeddings", json={"input": "a cat"})).status_code == 200
    assert [name.startswith("clipserve-json") for name in threads] == [True, True, False]

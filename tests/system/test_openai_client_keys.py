"""The official openai client with real keys: it authenticates, is charged, and does not retry a 429
insufficient_quota (x-should-retry: false)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import TINY_CONFIG, create_key
from tests.system.conftest import ServerProcess, start_server

MODEL = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("keyed-server")
    keys = {"rich": create_key(data_dir, "rich", "5"), "poor": create_key(data_dir, "poor", "0.000001")}
    server = start_server(
        data_dir, "--weights", "random", "--architecture", str(TINY_CONFIG), "--host", "127.0.0.1"
    )
    yield server, keys
    server.stop()


def _client(server: ServerProcess, key: str, attempts: list[httpx.Request] | None = None) -> openai.OpenAI:
    hooks = {"request": [attempts.append]} if attempts is not None else {}
    return openai.OpenAI(
        base_url=f"{server.base_url}/v1", api_key=key, max_retries=2,
        http_client=httpx.Client(event_hooks=hooks),  # type: ignore[arg-type]
    )  # fmt: skip


def test_a_real_key_embeds_and_is_charged(keyed_server: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = keyed_server
    client = _client(server, keys["rich"])

    def usage_micros() -> int:
        status = httpx.get(
            f"{server.base_url}/v1/key", headers={"Authorization": f"Bearer {keys['rich']}"}, timeout=60
        )
        return int(status.json()["data"]["usage_micros"])

    before = usage_micros()  # other tests in this module may have used the key already
    raw = client.embeddings.with_raw_response.create(model=MODEL, input=["a photo of a cat"])
    assert len(raw.parse().data) == 1
    assert int(raw.headers["x-request-cost-micros"]) == 1  # 7 tokens at 0.01 micro-dollars, rounded up
    assert raw.headers["x-ratelimit-limit-requests"] == "600"
    assert usage_micros() - before == 1


def test_a_wrong_key_is_an_authentication_error(keyed_server: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = keyed_server
    with pytest.raises(openai.AuthenticationError) as failure:
        _client(server, keys["rich"][:-1] + "0").embeddings.create(model=MODEL, input="x")
    assert failure.value.code == "invalid_api_key"


def test_insufficient_quota_is_not_retried(keyed_server: tuple[ServerProcess, dict[str, str]]) -> None:
    server, keys = keyed_server
    attempts: list[httpx.Request] = []
    with pytest.raises(openai.RateLimitError) as failure:
        _client(server, keys["poor"], attempts).embeddings.create(
            model=MODEL, input=["a long enough text"] * 4
        )
    assert failure.value.code == "insufficient_quota"
    assert len(attempts) == 1

"""`clipserve batch` against a real server: submit --wait writes the online answers; failed lines and a failed
validation exit 1 and say why; get, list, cancel and download on a batch held in flight by its images."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from clipserve.cli import main
from tests.support import TINY_CONFIG, data_uri, encode_image, gradient_image
from tests.system.conftest import HeldImages, ServerProcess, start_server

GIVE_UP_S = 120.0


@pytest.fixture(scope="module")
def images() -> Iterator[HeldImages]:
    held = HeldImages(encode_image(gradient_image(64, 48)))
    threading.Thread(target=held.serve_forever, daemon=True).start()
    yield held
    held.release.set()
    held.shutdown()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, images: HeldImages) -> Iterator[ServerProcess]:
    process = start_server(
        tmp_path_factory.mktemp("batch-cli"),
        *("--weights", "random", "--architecture", str(TINY_CONFIG)),
        *("--image-fetch-allow-private", "--image-fetch-timeout-s", "120"),
    )
    yield process
    process.stop()


def _line(custom_id: str, body: dict[str, Any], url: str = "/v1/embeddings") -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body})


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _results(path: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> output line, checking that no custom_id is answered twice."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    by_id = {line["custom_id"]: line for line in lines}
    assert len(by_id) == len(lines), f"a custom_id answered twice in {path.name}"
    return by_id


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BODIES = {
    "cat": {"input": ["a photo of a cat"]},
    "pair": {"input": ["a dog", {"image": data_uri(encode_image(gradient_image(40, 30, seed=1)))}]},
    "gradient": {"input": [data_uri(encode_image(gradient_image(50, 20, seed=2)))]},
}


def test_submit_wait_writes_the_online_answers_next_to_the_input(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "requests.jsonl", [_line(k, v) for k, v in BODIES.items()])
    stale = tmp_path / "requests.jsonl.errors.jsonl"
    stale.write_text("from an earlier run\n")
    code, out, err = _cli(capsys, "batch", "submit", str(source), "--endpoint", "/v1/embeddings", "--wait",
                          "--metadata", "job=captions", "--poll-s", "0.2", "--url", server.base_url)  # fmt: skip
    assert code == 0, err
    batch_id = out.split()[0]
    assert batch_id.startswith("batch_")
    assert "3 of 3 requests succeeded, 0 failed" in err
    assert f"{batch_id}: 100%" in err  # the progress bar reached the end: 3 of 3 lines answered
    assert "| 3/3 [" in err
    assert not stale.exists()  # no error file this time: the old one is not left to be read as this batch's
    results = _results(tmp_path / "requests.jsonl.out.jsonl")
    assert set(results) == set(BODIES)
    with httpx.Client(base_url=server.base_url, timeout=GIVE_UP_S) as http:
        for custom_id, body in BODIES.items():
            online = http.post("/v1/embeddings", json=body).json()
            answer = results[custom_id]
            assert answer["error"] is None
            assert answer["response"]["status_code"] == 200
            got = answer["response"]["body"]
            assert got["usage"] == online["usage"]
            np.testing.assert_allclose(
                [d["embedding"] for d in got["data"]], [d["embedding"] for d in online["data"]], atol=1e-5
            )
    code, out, _ = _cli(capsys, "batch", "get", batch_id, "--url", server.base_url)
    assert code == 0
    batch = json.loads(out)
    assert (batch["status"], batch["metadata"], batch["endpoint"]) == (
        "completed",
        {"job": "captions"},
        "/v1/embeddings",
    )
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}


IMAGE = data_uri(encode_image(gradient_image(40, 32, seed=3)))
OTHER = data_uri(encode_image(gradient_image(36, 30, seed=4)))
OTHER_BODIES = {
    "/v1/classify": {
        "two-images": {"input": [{"image": IMAGE}, {"image": OTHER}], "labels": ["cat", "dog", "car"]},
        "hf-shape": {"inputs": IMAGE, "parameters": {"candidate_labels": ["cat", "dog"]}},
    },
    "/v1/rank": {
        "mixed": {
            "query": "a cat",
            "documents": ["a cat", {"image": IMAGE}, "a car"],
            "return_documents": True,
        },
        "top-1": {"query": {"image": IMAGE}, "documents": ["dog", "a gradient"], "top_n": 1},
    },
}


@pytest.mark.parametrize("endpoint", sorted(OTHER_BODIES))
def test_submit_wait_gives_the_online_answers_of_classify_and_rank(
    endpoint: str, server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bodies = OTHER_BODIES[endpoint]
    source = _write(tmp_path / "requests.jsonl", [_line(k, v, endpoint) for k, v in bodies.items()])
    code, _, err = _cli(capsys, "batch", "submit", str(source), "--endpoint", endpoint, "--wait",
                        "--poll-s", "0.2", "--url", server.base_url)  # fmt: skip
    assert code == 0, err
    assert f"{len(bodies)} of {len(bodies)} requests succeeded, 0 failed" in err
    results = _results(tmp_path / "requests.jsonl.out.jsonl")
    with httpx.Client(base_url=server.base_url, timeout=GIVE_UP_S) as http:
        for custom_id, body in bodies.items():
            online = http.post(endpoint, json=body).json()
            got = results[custom_id]["response"]["body"]
            assert _scores(got) == pytest.approx(_scores(online), abs=1e-5), custom_id
            assert _without_scores(got) == _without_scores(online), custom_id
            if isinstance(online, dict):  # Hugging Face's shape is a bare list, without usage
                # the prompt cache makes the second asker's label tokens cached ones: same tokens, another split
                used, asked = got["usage"], online["usage"]
                assert used.get("image_count") == asked.get("image_count"), custom_id
                assert used["total_tokens"] + used.get("cached_tokens", 0) == asked[
                    "total_tokens"
                ] + asked.get("cached_tokens", 0), custom_id


def _scores(body: Any) -> list[float]:
    """Every float in the body, in order (classification probabilities, relevance scores)."""
    if isinstance(body, dict):
        return [x for key in sorted(body) for x in _scores(body[key])]
    if isinstance(body, list):
        return [x for value in body for x in _scores(value)]
    return [body] if isinstance(body, float) else []


def _without_scores(body: Any) -> Any:
    """The body with its floats blanked and without per-response ids and usage: labels, indices, order,
    documents."""
    if isinstance(body, dict):
        return {
            key: _without_scores(value)
            for key, value in body.items()
            if key not in ("id", "created", "usage")
        }
    if isinstance(body, list):
        return [_without_scores(value) for value in body]
    return None if isinstance(body, float) else body


def test_a_failed_line_goes_to_the_error_file_and_exits_1(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_an_image = data_uri(b"these bytes are not an image")
    source = _write(
        tmp_path / "mixed.jsonl", [_line("good", BODIES["cat"]), _line("bad", {"input": [not_an_image]})]
    )
    code, _, err = _cli(capsys, "batch", "submit", str(source), "--endpoint", "/v1/embeddings", "--wait",
                        "--poll-s", "0.2", "--url", server.base_url)  # fmt: skip
    assert code == 1
    assert "1 of 2 requests succeeded, 1 failed" in err
    assert set(_results(tmp_path / "mixed.jsonl.out.jsonl")) == {"good"}
    failed = _results(tmp_path / "mixed.jsonl.errors.jsonl")["bad"]
    with httpx.Client(base_url=server.base_url, timeout=GIVE_UP_S) as http:
        online = http.post("/v1/embeddings", json={"input": [not_an_image]})
    assert failed["response"]["status_code"] == online.status_code == 400
    assert failed["response"]["body"]["error"]["message"] == online.json()["error"]["message"]


def test_a_file_that_fails_validation_exits_1_naming_the_line(
    server: ServerProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = _write(tmp_path / "dup.jsonl", [_line("same", BODIES["cat"]), _line("same", BODIES["cat"])])
    code, out, err = _cli(capsys, "batch", "submit", str(source), "--endpoint", "/v1/embeddings", "--wait",
                          "--poll-s", "0.2", "--url", server.base_url)  # fmt: skip
    assert code == 1
    assert f"batch {out.strip()} failed:" in err
    assert "line 2:" in err
    assert "custom_id" in err
    assert not (tmp_path / "dup.jsonl.out.jsonl").exists()


def test_get_list_cancel_and_download_a_batch_held_in_flight(
    server: ServerProcess, images: HeldImages, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [_line(f"held{i}", {"input": [{"image": images.url}]}) for i in range(3)]
    source = _write(tmp_path / "held.jsonl", lines)
    code, out, err = _cli(capsys, "batch", "submit", str(source), "--endpoint", "/v1/embeddings",
                          "--url", server.base_url)  # fmt: skip
    assert code == 0, err
    batch_id = out.strip()
    assert images.arrived.acquire(timeout=GIVE_UP_S), "the batch never fetched its first image"
    # a line is in flight (its image is held): the batch cannot have ended
    code, _, err = _cli(
        capsys, "batch", "download", batch_id, "--output", str(tmp_path), "--url", server.base_url
    )
    assert code == 1
    assert f"batch {batch_id} is in_progress" in err
    code, out, _ = _cli(capsys, "batch", "list", "--url", server.base_url)
    assert code == 0
    assert batch_id in [b["id"] for b in json.loads(out)["data"]]
    code, out, _ = _cli(capsys, "batch", "cancel", batch_id, "--url", server.base_url)
    assert code == 0
    assert json.loads(out)["status"] in ("cancelling", "cancelled")
    images.release.set()
    code, _, err = _cli(capsys, "batch", "download", batch_id, "--wait", "--poll-s", "0.2",
                        "--output", str(tmp_path / "got"), "--url", server.base_url)  # fmt: skip
    assert code == 1  # cancelled is not a clean completion
    assert f"batch {batch_id} cancelled" in err
    code, out, _ = _cli(capsys, "batch", "get", batch_id, "--url", server.base_url)
    batch = json.loads(out)
    assert batch["status"] == "cancelled"
    counts = batch["request_counts"]
    written = {}
    for kind, file_key in (("out", "output_file_id"), ("errors", "error_file_id")):
        path = tmp_path / "got" / f"{batch_id}.{kind}.jsonl"
        assert path.exists() == bool(batch[file_key])
        written[kind] = _results(path) if path.exists() else {}
    assert len(written["out"]) == counts["completed"]
    assert set(written["out"]).isdisjoint(written["errors"])


def test_server_errors_are_one_line_and_exit_1(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = "batch_" + "0" * 24
    code, out, err = _cli(capsys, "batch", "get", missing, "--url", server.base_url)
    assert (code, out) == (1, "")
    assert err.startswith(f"clipserve: error: GET /v1/batches/{missing}: 404 ")
    assert err.count("\n") == 1
    code, _, err = _cli(capsys, "batch", "cancel", missing, "--url", server.base_url)
    assert code == 1
    assert ": 404 " in err


def test_no_server_at_the_url_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code, out, err = _cli(capsys, "batch", "cancel", "batch_x", "--url", url)
    assert (code, out) == (1, "")
    assert err.startswith(f"clipserve: error: {url}: ConnectError")
    assert err.count("\n") == 1

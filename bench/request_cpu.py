"""Server CPU per request, by kind: what one request costs the process, whatever the client pays.

    python bench/request_cpu.py [--tiny] [--requests 100]

Starts a real server (auth on, seeded random ViT-B-32 unless --tiny, burst pacing off so nothing is refused)
with one key, sends each kind of request one at a time, and prints the server process's CPU time (user + system,
from /proc) per request and the wall time per request. Free requests (a collection create and delete) cost no
credit, so this is the figure that says how much of the box a flood of them can take.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from abuse import create_key, start_server


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny test model instead of ViT-B-32")
    parser.add_argument("--requests", type=int, default=100, help="requests of each kind")
    args = parser.parse_args()
    os.environ["CLIPSERVE_RATE_LIMIT_BURST_REQUESTS"] = "0"  # measure the work, not the pacing
    os.environ["CLIPSERVE_RATE_LIMIT_REQUESTS_PER_MINUTE"] = "0"
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        key = create_key(data_dir, "bench")
        server, base = start_server(data_dir, args.tiny)
        headers = {"Authorization": f"Bearer {key}"}
        try:
            with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

                def create_delete(i: int) -> None:
                    assert client.post("/v1/collections", json={"name": f"c{i}"}).status_code == 200
                    assert client.delete(f"/v1/collections/c{i}").status_code == 200

                def embed_text(i: int) -> None:
                    assert (
                        client.post("/v1/embeddings", json={"input": f"a photo of cat {i}"}).status_code
                        == 200
                    )

                def list_models(i: int) -> None:
                    assert client.get("/v1/models").status_code == 200

                kinds: list[tuple[str, Callable[[int], None]]] = [
                    ("collection create + delete (free)", create_delete),
                    ("embeddings, one short text (paid)", embed_text),
                    ("GET /v1/models (free, no database)", list_models),
                ]
                print(f"{'request':<38} {'server CPU ms':>14} {'wall ms':>9}")
                for name, send in kinds:
                    for i in range(5):  # warm-up
                        send(10_000 + i)
                    started_cpu, started = cpu_seconds(server.pid), time.perf_counter()
                    for i in range(args.requests):
                        send(i)
                    cpu_ms = (cpu_seconds(server.pid) - started_cpu) * 1000 / args.requests
                    wall_ms = (time.perf_counter() - started) * 1000 / args.requests
                    print(f"{name:<38} {cpu_ms:>14.1f} {wall_ms:>9.1f}")
        finally:
            server.terminate()
            server.wait(60)


if __name__ == "__main__":
    main()

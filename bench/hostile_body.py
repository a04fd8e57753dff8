"""The event loop while one hostile JSON body arrives: its answer time, /health's worst latency, the peak RSS.

    python bench/hostile_body.py [--keys 2500000] [--with-key]

A real server process (tiny model, auth on: one key exists) receives one JSON object with KEYS keys (34 MB for
2.5 M), without an API key (or with one, --with-key). Meanwhile a second client polls /health every 10 ms. The
script prints how long the hostile request took, /health's median and worst latency meanwhile, and the
server's peak RSS (VmHWM) over its baseline. docs/security.md, section "Request bodies", shows the numbers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from common import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "fixtures" / "clipserve-tiny.json"


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keys", type=int, default=2_500_000)
    parser.add_argument("--with-key", action="store_true", help="send a valid API key with the hostile body")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="clipserve-bench-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    key = subprocess.run(
        [sys.executable, "-m", "clipserve", "keys", "create", "--data-dir", str(data_dir), "--name", "bench",
         "--credit", "10"],
        capture_output=True, text=True, check=True, env=env,
    ).stdout.split()[0]  # fmt: skip
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "clipserve", "serve", "--port", str(port), "--data-dir", str(data_dir),
         "--weights", "random", "--architecture", str(TINY), "--log-level", "warning"],
        env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server)
        baseline = peak_rss_mb(server.pid)
        body = ("{" + ",".join(f'"k{i}":0' for i in range(args.keys)) + "}").encode()
        latencies: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with httpx.Client(base_url=base, timeout=60) as client:
                while not done.is_set():
                    started = time.perf_counter()
                    client.get("/health")
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.01)

        poller = threading.Thread(target=poll)
        poller.start()
        time.sleep(0.5)
        headers = {"Content-Type": "application/json"}
        if args.with_key:
            headers["Authorization"] = f"Bearer {key}"
        started = time.perf_counter()
        response = httpx.post(f"{base}/v1/embeddings", content=body, headers=headers, timeout=120)
        took = time.perf_counter() - started
        time.sleep(0.5)
        done.set()
        poller.join()
        print(
            f"body: {len(body) / 1e6:.1f} MB, {args.keys} keys, API key: {'yes' if args.with_key else 'no'}"
        )
        print(f"answer: {response.status_code} {response.text[:120]!r} after {took:.2f} s")
        print(
            f"/health meanwhile: {len(latencies)} calls, median {statistics.median(latencies) * 1000:.1f} ms, "
            f"worst {max(latencies) * 1000:.1f} ms"
        )
        print(f"server peak RSS: +{peak_rss_mb(server.pid) - baseline:.0f} MB over {baseline:.0f} MB")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()

"""A real two-node Ray cluster on this machine (`ray start --head` plus a second `ray start --address`, one CPU
each) runs `clipserve embed-dataset --ray-address` and writes byte for byte what a local run writes.

One CPU per node is the hard case for the plan's resources: a model actor (0.75 CPU) and a read/decode task
(0.25 CPU) must fit on each node, and two actors (one per cluster CPU) can only run one on each node.
Ray turns 127.0.0.1 into the machine's own address for its nodes (services.resolve_ip_for_localhost), so the
nodes listen on that address; nothing else is reached. The test stops both nodes (never `ray stop`, which would
stop every Ray on the machine) and checks that none of their processes is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.system.conftest import free_port
from tests.system.embed_dataset_support import (
    Dataset,
    command,
    command_line,
    committed,
    descendants,
    make_dataset,
    output_files,
    run_command,
    short_tmp,
    wait_gone,
)

IMAGES = 120  # 6 shards of 20
NODES_UP_S = 180.0  # for both nodes to register; only a broken start gets near it
NODE_STOP_S = 60.0  # for the killed nodes' processes to go


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    temp_dirs: tuple[Path, Path]  # the head's, the worker node's
    processes: list[subprocess.Popen[bytes]]


def _ray() -> str:
    return str(Path(sys.executable).parent / "ray")


def _alive_nodes(address: str, env: dict[str, str]) -> int:
    probe = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False, logging_level='error'); "
        "print(sum(1 for n in ray.nodes() if n['Alive']))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    lines = done.stdout.strip().splitlines()
    return int(lines[-1]) if done.returncode == 0 and lines and lines[-1].isdigit() else 0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    port = free_port()
    address = f"127.0.0.1:{port}"
    # Token authentication with this cluster's own token (never the user's ~/.ray/auth_token).
    env = {
        **os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
        "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    head_tmp, worker_tmp = short_tmp(), short_tmp()
    common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
    head = subprocess.Popen(
        [_ray(), "start", "--head", *common, "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--temp-dir", str(head_tmp), "--include-dashboard", "false",
         "--dashboard-agent-listen-port", str(free_port())],
        stdout=(logs / "head.log").open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    processes = [head]
    try:
        worker = subprocess.Popen(
            [_ray(), "start", *common, "--address", address, "--temp-dir", str(worker_tmp),
             "--dashboard-agent-listen-port", str(free_port())],
            stdout=(logs / "worker.log").open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        processes.append(worker)
        deadline = time.monotonic() + NODES_UP_S
        while _alive_nodes(address, env) < 2:
            for process, name in ((head, "head"), (worker, "worker")):
                assert process.poll() is None, (logs / f"{name}.log").read_text()
            assert time.monotonic() < deadline, "the two nodes never both came up"
        yield Cluster(address, env, (head_tmp, worker_tmp), processes)
    finally:
        try:
            _stop(processes)
        finally:
            for folder in (head_tmp, worker_tmp):
                shutil.rmtree(folder, ignore_errors=True)


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """Kill each node's process group (SIGTERM would make `ray start --block` drain for 30 s), then make sure
    every process the nodes started is gone, whatever group it ended up in."""
    below = {pid for process in processes for pid in descendants(process.pid)}
    for process in processes:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    survivors = wait_gone(below, NODE_STOP_S)
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, [command_line(pid) for pid in survivors]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return make_dataset(tmp_path_factory.mktemp("dataset"), images=IMAGES)


def test_a_two_node_cluster_writes_what_a_local_run_writes(
    cluster: Cluster, dataset: Dataset, tmp_path: Path
) -> None:
    local = tmp_path / "local"
    run_command(command(dataset.folder, local), tmp_path / "local.log")
    on_cluster = tmp_path / "cluster"
    log = _run_on(cluster, command(dataset.folder, on_cluster, "--ray-address", cluster.address), tmp_path)
    assert committed(on_cluster) == list(range(-(-len(dataset.rows) // 20))), log
    want, got = output_files(local), output_files(on_cluster)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], f"{name} differs between the local and the cluster run"
    # Both nodes worked: the worker node's own log folder holds a model actor's and a decode task's logs.
    worker_logs = "\n".join(
        path.read_text(errors="replace") for path in cluster.temp_dirs[1].rglob("logs/worker-*")
    )
    assert ":actor_name:MapWorker(MapBatches(_ModelActor))" in worker_logs, (
        "no model actor on the worker node"
    )
    assert ":task_name:FlatMap(_read_stage)" in worker_logs, "no read/decode task ran on the worker node"


def _run_on(cluster: Cluster, argv: list[str], tmp_path: Path) -> str:
    log = tmp_path / "cluster.log"
    with log.open("w") as out:
        done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=cluster.env, timeout=600)
    text = log.read_text()
    assert done.returncode == 0, text
    return text

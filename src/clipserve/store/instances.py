"""Which server processes are alive: holds and pending idempotency records of a dead one stop counting.

An instance is one process start (a random id). Missed heartbeats tell that any instance is gone. Sooner, a
process can tell that another is gone by its pid, but only where that pid means the same process: the same
kernel boot and the same pid namespace (two containers sharing a data dir may both be "web-1", pid 1), and the
same start time (a pid is reused).
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, delete, insert, select, update

from clipserve.store.schema import instances

_PROC = Path("/proc")


def current_pid_scope() -> str | None:
    """Where this process's pids mean something: "<kernel boot id>/<pid namespace>", or None when it cannot be
    told (no /proc, or a /proc of another pid namespace)."""
    try:
        boot_id = (_PROC / "sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink(_PROC / "self/ns/pid")
        own_pid = int((_PROC / "self/stat").read_text().split(" ", 1)[0])
    except (OSError, ValueError):
        return None
    if own_pid != os.getpid() or not boot_id:
        return None  # this /proc shows another pid namespace: its pids are not ours
    return f"{boot_id}/{namespace}"


def process_started(pid: int) -> int | None:
    """When process `pid` started, in clock ticks after boot (/proc/PID/stat field 22); None if unknown."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
        return int(stat[stat.rfind(")") + 2 :].split()[19])  # fields after "(comm)" start at field 3
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Instance:
    """This process, as the ledger knows it."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    pid_scope: str | None = field(default_factory=current_pid_scope)
    pid_started: int | None = None  # read from /proc for `pid` when not given

    def __post_init__(self) -> None:
        if self.pid_started is None and self.pid_scope is not None:
            object.__setattr__(self, "pid_started", process_started(self.pid))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_is_running(pid: int, started: int | None) -> bool:
    """Whether `pid` (in this pid namespace) is still the process that started at `started`."""
    if not pid_alive(pid):
        return False
    if started is None:
        return True
    now = process_started(pid)
    return now is None or now == started  # unreadable (hidepid): assume it is


def register(conn: Connection, me: Instance, now: datetime) -> None:
    conn.execute(
        insert(instances).values(
            id=me.id, hostname=me.hostname, pid=me.pid, pid_scope=me.pid_scope, pid_started=me.pid_started,
            started_at=now, heartbeat_at=now,
        )
    )  # fmt: skip


def heartbeat(conn: Connection, me: Instance, now: datetime) -> None:
    """Say `me` is alive; registers it when it is not (yet, or any more: purged while suspended)."""
    updated = conn.execute(update(instances).where(instances.c.id == me.id).values(heartbeat_at=now))
    if updated.rowcount == 0:
        register(conn, me, now)


def dead_instances(conn: Connection, me: Instance, now: datetime, liveness_s: float) -> set[str]:
    """Ids of instances known to be gone: no heartbeat within `liveness_s`, or (in this process's pid scope) a
    process that is no longer running, so a restart after a crash frees their holds at once.

    Only the dead are named: an instance the caller has not seen yet (it registered a moment ago, after a cached
    read) counts as alive, so its holds always count. Naming the living instead once let a replica that had read
    the list a second before another replica started ignore that replica's holds, and overdraw an account."""
    cutoff = now - timedelta(seconds=liveness_s)
    rows = conn.execute(
        select(
            instances.c.id,
            instances.c.pid,
            instances.c.pid_scope,
            instances.c.pid_started,
            instances.c.heartbeat_at,
        ).where(instances.c.id != me.id)
    ).all()
    dead: set[str] = set()
    for instance_id, pid, scope, started, heartbeat_at in rows:
        if heartbeat_at <= cutoff or (
            me.pid_scope is not None and scope == me.pid_scope and not process_is_running(pid, started)
        ):
            dead.add(instance_id)
    return dead


def forget_stopped(conn: Connection, now: datetime) -> None:
    conn.execute(delete(instances).where(instances.c.heartbeat_at < now - timedelta(days=1)))

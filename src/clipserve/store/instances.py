"""Which server processes are alive: holds and pending idempotency records of a dead one stop counting."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select, update

from clipserve.store.schema import instances


@dataclass(frozen=True)
class Instance:
    """This process, as the ledger knows it."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def register(conn: Connection, me: Instance, now: datetime) -> None:
    conn.execute(
        insert(instances).values(id=me.id, hostname=me.hostname, pid=me.pid, started_at=now, heartbeat_at=now)
    )


def heartbeat(conn: Connection, me: Instance, now: datetime) -> None:
    updated = conn.execute(update(instances).where(instances.c.id == me.id).values(heartbeat_at=now))
    if updated.rowcount == 0:  # purged while this process was suspended: register again
        register(conn, me, now)


def live_instances(
    conn: Connection, me: Instance, now: datetime, liveness_s: float, *, same_host_pids: bool
) -> set[str]:
    """Ids of instances that heartbeat within `liveness_s`. With `same_host_pids` (SQLite: every process is on
    this host), one whose pid is gone is dead at once, so a restart after a crash frees its holds immediately."""
    cutoff = now - timedelta(seconds=liveness_s)
    rows = conn.execute(
        select(instances.c.id, instances.c.hostname, instances.c.pid).where(instances.c.heartbeat_at > cutoff)
    ).all()
    live = {me.id}
    for instance_id, hostname, pid in rows:
        if same_host_pids and hostname == me.hostname and (pid == me.pid or not pid_alive(pid)):
            continue  # its pid is gone, or is now ours (a restarted container is pid 1 again)
        live.add(instance_id)
    return live


def forget_stopped(conn: Connection, now: datetime) -> None:
    conn.execute(delete(instances).where(instances.c.heartbeat_at < now - timedelta(days=1)))

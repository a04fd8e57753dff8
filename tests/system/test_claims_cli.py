"""Claims of docs/accounts.md about the `clipserve keys` CLI, run as the real command on a real data dir:
`keys audit` finds a ledger that does not add up (exit 1), and a new key goes to stdout only."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest


def _clipserve(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clipserve", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _audit(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return _clipserve(data_dir, "keys", "audit")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Two accounts made by the CLI: #1 with $2 granted then $0.75 more, #2 with $1."""
    for args in (
        ("keys", "create", "--name", "acme", "--credit", "2"),
        ("keys", "create", "--name", "other", "--credit", "1"),
        ("keys", "grant", "--account", "1", "--credit", "0.75", "--note", "top-up"),
    ):
        done = _clipserve(tmp_path, *args)
        assert done.returncode == 0, done.stderr
    return tmp_path


def _write(data_dir: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(data_dir / "clipserve.db") as conn:
        assert conn.execute(sql, params).rowcount == 1


def test_keys_audit_exits_0_on_a_consistent_ledger_and_1_on_each_kind_of_tampering(data_dir: Path) -> None:
    good = _audit(data_dir)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.strip().splitlines()[-1] == "2 accounts checked, 0 inconsistent"
    assert "INCONSISTENT" not in good.stdout
    tamperings = {
        # the balance alone (grants and the ledger unchanged)
        "balance": ("UPDATE accounts SET balance_micros = balance_micros + 1 WHERE id = 1", 1),
        # one ledger row (the account's totals unchanged)
        "ledger row": ("UPDATE ledger SET amount_micros = 1 WHERE account_id = 2 AND kind = 'grant'", 2),
        # the grant total alone
        "granted total": ("UPDATE accounts SET granted_micros = granted_micros - 5 WHERE id = 2", 2),
        # a grant row turned into a charge (the totals unchanged)
        "extra charge": (
            "UPDATE ledger SET kind = 'charge', amount_micros = -750000 WHERE account_id = 1 AND "
            "note = 'top-up'",
            1,
        ),
    }
    for name, (sql, account) in tamperings.items():
        copy = data_dir / name.replace(" ", "-")  # each tampering on its own copy of the consistent database
        copy.mkdir()
        with (
            sqlite3.connect(data_dir / "clipserve.db") as source,
            sqlite3.connect(copy / "clipserve.db") as target,
        ):
            source.backup(target)
        _write(copy, sql)
        bad = _audit(copy)
        assert bad.returncode == 1, (name, bad.stdout, bad.stderr)
        assert f"account {account}: INCONSISTENT" in bad.stdout, name
        assert bad.stdout.strip().splitlines()[-1] == "2 accounts checked, 1 inconsistent", name


def test_a_new_key_is_printed_to_stdout_only(tmp_path: Path) -> None:
    done = _clipserve(tmp_path, "keys", "create", "--name", "acme", "--credit", "1", "--log-level", "debug")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert key.startswith("sk-clip-")
    assert len(done.stdout.splitlines()) == 1  # stdout is the key and nothing else
    assert "Store the key now" in done.stderr  # stderr says what was made ...
    for part in (key, key[8:], key[20:], key[-16:]):  # ... and holds no part of the secret
        assert part not in done.stderr
    listed = _clipserve(tmp_path, "keys", "list", "--json")
    assert listed.returncode == 0
    assert key[20:] not in listed.stdout + listed.stderr

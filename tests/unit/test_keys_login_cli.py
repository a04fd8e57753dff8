"""`clipserve keys login`: an existing account gets a web login (argon2id hash, console key, admin flag); the
password comes from stdin, never argv; a short password, a second login and a bad email are refused."""

from __future__ import annotations

import asyncio
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from clipserve.cli import main
from clipserve.store.accounts import AccountStore, utc_now
from clipserve.store.database import Database
from tests.web_accounts_support import web_accounts_on

CHEAP = ["--password-hash-time-cost", "1", "--password-hash-memory-kib", "8192"]


def _login(monkeypatch: pytest.MonkeyPatch, data_dir: Path, password: str, *extra: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["keys", "login", "--data-dir", str(data_dir), *CHEAP, *extra])


def test_keys_login_gives_an_existing_account_a_working_login(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "create", "--name", "acme", "--data-dir", str(tmp_path)]) == 0
    assert _login(monkeypatch, tmp_path, "correct horse battery", "--account", "1", "--email", "Ops@Acme.io",
                  "--admin") == 0  # fmt: skip
    assert "ops@acme.io" in capsys.readouterr().err
    database = Database(f"sqlite:///{tmp_path / 'clipserve.db'}")
    try:
        console = [k for k in AccountStore(database).list_keys(1) if k.is_console]
        assert [(k.name, k.is_admin) for k in console] == [("console", True)]
        with ThreadPoolExecutor(2) as pool:
            web = web_accounts_on(database, utc_now, pool=pool)
            session, _ = asyncio.run(web.sign_in("ops@acme.io", "correct horse battery", "192.0.2.1/32"))
        assert (session.account_id, session.is_admin) == (1, True)
    finally:
        database.close()
    # a second login for the account, a short password, an unknown account: one-line errors, exit 1
    assert _login(monkeypatch, tmp_path, "another password", "--account", "1", "--email", "x@acme.io") == 1
    assert _login(monkeypatch, tmp_path, "short", "--account", "1", "--email", "y@acme.io") == 1
    assert _login(monkeypatch, tmp_path, "long enough pw", "--account", "9", "--email", "z@acme.io") == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3
    assert all(line.startswith("clipserve: error:") for line in errors)


def test_keys_login_refuses_a_malformed_email(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exited:
        _login(monkeypatch, tmp_path, "correct horse battery", "--account", "1", "--email", "not-an-email")
    assert exited.value.code == 2

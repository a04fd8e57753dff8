"""Bad values on the command line get one clear line on stderr and exit code 2: never a traceback, never a
value the database or the server cannot hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipserve.cli import main


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:  # argparse's own exit, through cli.OneLineArgumentParser
        return int(exit_.code or 0)


@pytest.mark.parametrize(
    "argv",
    [
        ["keys", "create", "--name", "x", "--credit", "Infinity"],
        ["keys", "create", "--name", "x", "--credit", "NaN"],
        ["keys", "create", "--name", "x", "--credit", "1e30"],
        ["keys", "create", "--name", "x", "--credit", "1000000.01"],
        ["keys", "create", "--name", "x", "--credit", "-5"],
        ["keys", "create", "--name", "x", "--credit", "0.0000001"],
        ["keys", "create", "--name", "x", "--credit", "1e999999999"],
        ["keys", "create", "--name", "x", "--requests-per-minute", "1000000000000"],
        ["keys", "create", "--name", "x", "--requests-per-minute", "-1"],
        ["keys", "create", "--name", "x", "--images-per-minute", "99999999999999999999"],
        ["keys", "create", "--name", "x", "--expires-in-days", "inf"],
        ["keys", "create", "--name", "x", "--expires-in-days", "nan"],
        ["keys", "create", "--name", "x", "--expires-in-days", "1e30"],
        ["keys", "create", "--name", "x", "--expires-in-days", "0"],
        ["keys", "create", "--name", "x", "--account", str(2**70)],
        ["keys", "create", "--name", ""],
        ["keys", "create", "--name", "a\x00b"],
        ["keys", "create", "--name", "bad-utf8-\udcff"],  # what Python makes of argv bytes that are not UTF-8
        ["keys", "usage", "--days", "100000000"],
        ["keys", "usage", "--days", "0"],
        ["keys", "usage", "--account", "-3"],
        ["keys", "grant", "--account", "1", "--credit", "1e30"],
        ["keys", "grant", "--account", "1", "--credit", "-Infinity"],
        ["keys", "grant", "--account", str(2**64), "--credit", "1"],
        ["keys", "revoke", str(2**70)],
        ["keys", "list", "--account", "99999999999999999999999"],
        ["collections", "import", "c", "--batch-size", "0"],
        ["serve", "--graceful-shutdown-s", "inf"],
        ["serve", "--batch-wait-ms", "nan"],
        ["serve", "--credit-hold-s", "1e300"],
        ["serve", "--idempotency-ttl-s", "1e300"],
        ["serve", "--signup-credit", "1e30"],
        ["serve", "--price-per-1k-images", "Infinity"],
        ["serve", "--rate-limit-requests-per-minute", "1e3"],
        ["serve", "--rate-limit-images-per-minute", "10000000000"],
        ["serve", "--port", "99999"],
    ],
)
def test_a_bad_value_is_one_line_and_exit_code_2(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ["--data-dir", str(tmp_path)] if argv[0] in ("keys", "serve") else [str(tmp_path)]
    code = _run([*argv, *store])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "error" in lines[0]
    assert "Traceback" not in captured.err
    assert not (tmp_path / "clipserve.db").exists() or argv[0] == "serve"  # refused before the database


def test_the_largest_allowed_values_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--data-dir", str(tmp_path)]
    assert _run(["keys", "create", "--name", "big", "--credit", "1000000", "--requests-per-minute", "1000000",
                 "--images-per-minute", "0", "--expires-in-days", "36500", *store]) == 0  # fmt: skip
    assert capsys.readouterr().out.startswith("sk-clip-")
    assert _run(["keys", "grant", "--account", "1", "--credit", "-1000000", "--note", "back", *store]) == 0
    assert "balance $0" in capsys.readouterr().out
    assert _run(["keys", "usage", "--days", "3660", *store]) == 0
    assert "total $0" in capsys.readouterr().out
    assert _run(["keys", "revoke", "1", *store]) == 0

"""The defaults in docs/operations.md's settings table are the defaults `Settings()` really has.

Each row names one or more flags (`--a` / `--b`) and as many defaults (`1 / 2`). Numbers, sizes (KiB, MiB, MP),
on/off and quoted strings are compared with the field's value; a default the table describes in words (e.g. "half
the cores") is listed in DESCRIBED with the check that backs the words. A row the parser cannot read, or a flag
that is not a setting, fails the test, so a new row is either checkable or explicitly described.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clipserve.config import Settings, default_data_dir

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "MP": 1_000_000}

# Defaults the table states in words, and what the words mean for the field.
DESCRIBED: dict[str, tuple[str, Callable[[Settings], bool]]] = {
    "data_dir": ("per-user data dir", lambda s: s.data_dir == default_data_dir()),
    "model_cache_dir": (
        "`DATA_DIR/models`",
        lambda s: s.model_cache_dir is None and s.resolved_model_cache_dir == s.data_dir / "models",
    ),
    "torch_threads": ("all cores", lambda s: s.torch_threads is None),
    "decode_workers": ("half the cores", lambda s: s.decode_workers == max(1, (os.cpu_count() or 2) // 2)),
    "max_queue_items_per_account": (
        "half the queue, at least `--max-items-per-request`",
        lambda s: (
            s.max_queue_items_per_account is None
            and s.queue_items_per_account == max(s.max_queue_items // 2, s.max_items_per_request)
        ),
    ),
    "image_fetch_allowed_networks": ("none", lambda s: s.image_fetch_allowed_networks == []),
    "database_url": (
        "SQLite at `DATA_DIR/clipserve.db`",
        lambda s: (
            s.database_url is None
            and s.resolved_database_url.startswith("sqlite")
            and s.resolved_database_url.endswith(str(s.data_dir / "clipserve.db"))
        ),
    ),
    "trusted_proxies": ("none", lambda s: s.trusted_proxies == []),
    "cors_allowed_origins": ("none", lambda s: s.cors_allowed_origins == []),
    "vector_url": ("embedded", lambda s: s.vector_url is None),
    "batch_files_dir": (
        "`DATA_DIR/files`",
        lambda s: s.batch_files_dir is None and s.resolved_batch_files_dir == str(s.data_dir / "files"),
    ),
}
# Flags a row names without stating their default.
UNSTATED = {"vector_token"}


def documented_defaults() -> dict[str, str | None]:
    """flag name (as a Settings field) -> the default cell's text for it, from the operations.md table."""
    lines = OPERATIONS_MD.read_text().splitlines()
    start = lines.index("| setting (flag / env) | default | what it does |")
    out: dict[str, str] = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        setting_cell, default_cell = cells[0], cells[1]
        flags = re.findall(r"`--([a-z0-9-]+)(?:[^`]*)`", setting_cell)
        flags = [f for f in flags if not f.startswith("no-")]
        defaults: list[str | None] = [d.strip() for d in default_cell.split(" / ")] if len(flags) > 1 else []
        if len(flags) == 1 or len(defaults) == 1:
            # One default for the row: the first flag's; the others' defaults are not stated (see UNSTATED).
            defaults = [default_cell] + [None] * (len(flags) - 1)
        assert len(defaults) == len(flags), f"row names {flags} but has defaults {defaults}: {line}"
        for flag, default in zip(flags, defaults, strict=True):
            out[flag.replace("-", "_")] = default
    return out


def parse_default(text: str) -> Any:
    if text in ("on", "off"):
        return text == "on"
    number = re.fullmatch(r"(\d+(?:\.\d+)?)(?: (KiB|MiB|GiB|MP))?", text)
    if number:
        value = Decimal(number.group(1)) * UNITS.get(number.group(2) or "", 1)
        return value
    quoted = re.fullmatch(r"`([^`]+)`", text)
    if quoted:
        return quoted.group(1)
    if re.fullmatch(r"[a-z]+|\d+\.\d+\.\d+\.\d+", text):  # a word, or an address
        return text
    raise ValueError(f"cannot read the default {text!r}")


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in list(os.environ):
        if name.startswith("CLIPSERVE_"):
            monkeypatch.delenv(name)
    return Settings()


def test_the_table_covers_many_settings() -> None:
    documented = documented_defaults()
    assert "image_decode_ahead" in documented
    assert (
        len(documented) >= 70
    )  # the table lists nearly every setting; a parser that reads nothing fails here


def test_every_documented_default_is_the_settings_default(settings: Settings) -> None:
    wrong = []
    documented = documented_defaults()
    assert {name for name, text in documented.items() if text is None} == UNSTATED
    for name, text in documented.items():
        assert name in Settings.model_fields, f"operations.md names --{name.replace('_', '-')}, not a setting"
        if text is None:
            continue
        actual = getattr(settings, name)
        if name in DESCRIBED:
            words, check = DESCRIBED[name]
            assert text == words, f"--{name}: the table says {text!r}, DESCRIBED expects {words!r}"
            if not check(settings):
                wrong.append(f"--{name}: documented as {text!r}, Settings has {actual!r}")
            continue
        expected = parse_default(text)
        if isinstance(expected, Decimal):
            same = not isinstance(actual, bool) and Decimal(str(actual)) == expected
        else:
            same = actual == expected
        if not same:
            wrong.append(f"--{name}: documented as {text!r}, Settings has {actual!r}")
    assert not wrong, "docs/operations.md disagrees with Settings():\n" + "\n".join(wrong)

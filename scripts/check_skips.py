#!/usr/bin/env python3
"""Fail when the test run skipped anything beyond the documented list (tests/allowed_skips.txt).

    python scripts/check_skips.py JUNIT_XML [ALLOW_LIST]

JUNIT_XML is pytest's `--junitxml` report of the whole suite, run from the current directory. ALLOW_LIST (default tests/allowed_skips.txt) has
one skipped test per line: its pytest id, then why it may skip (required); blank lines and lines starting with
'#' are ignored. Exit status 1, with the offending ids, when a test skipped (or xfailed) that is not listed, or
a listed test did not skip (it now runs, or no longer exists): the list must say exactly what CI does not test.
Standard library only, so that CI can run it before anything is installed.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ALLOW_LIST = Path("tests/allowed_skips.txt")


@dataclass(frozen=True)
class Outcome:
    test_id: str  # "classname::name" as the junit report spells it (see junit_key)
    skipped: bool
    message: str


def junit_key(test_id: str) -> str:
    """A pytest id in the junit report's spelling, "classname::name" (pytest's mangle_test_address):
    tests/unit/test_x.py::TestY::test_z[p] -> tests.unit.test_x.TestY::test_z[p]."""
    path_and_names, bracket, params = test_id.partition("[")
    names = path_and_names.split("::")
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    names[-1] += bracket + params
    return "::".join([".".join(names[:-1]), names[-1]])


def pytest_id(key: str, root: Path) -> str:
    """Back from the report's spelling to a pytest id (to paste into the allow-list), where the module's file
    is found under `root`; else the report's spelling."""
    classname, _, name = key.partition("::")
    parts = classname.split(".") if classname else name.split(".")
    for end in range(len(parts), 0, -1):
        path = "/".join(parts[:end]) + ".py"
        if (root / path).is_file():
            rest = parts[end:] + ([name] if classname else [])
            return "::".join([path, *rest])
    return key.removeprefix("::")


def read_allow_list(path: Path) -> dict[str, str]:
    """junit key -> the listed pytest id. Raises ValueError on a line without a reason."""
    allowed: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
            raise ValueError(f"{path}:{number}: '{line}' says no reason why it may skip")
        allowed[junit_key(parts[0])] = parts[0]
    return allowed


def read_outcomes(junit_xml: Path) -> dict[str, Outcome]:
    outcomes: dict[str, Outcome] = {}
    root = ET.parse(junit_xml).getroot()  # noqa: S314 - the report this CI run's pytest just wrote
    for case in root.iter("testcase"):
        key = f"{case.get('classname', '')}::{case.get('name', '')}"
        skip = case.find("skipped")
        skipped = skip is not None and case.find("failure") is None and case.find("error") is None
        message = "" if skip is None else skip.get("message") or ""
        if skip is not None and message == "collection skipped" and skip.text:  # a whole module: why is here
            message = skip.text.strip()
        outcomes[key] = Outcome(key, skipped, message)
    return outcomes


def problems(outcomes: dict[str, Outcome], allowed: dict[str, str], root: Path) -> list[str]:
    found = []
    for key, outcome in sorted(outcomes.items()):
        if outcome.skipped and key not in allowed:
            found.append(f"skipped, not in the allow-list: {pytest_id(key, root)} ({outcome.message})")
    for key, test_id in sorted(allowed.items()):
        if key not in outcomes:
            found.append(f"listed, but not in this run (renamed or removed?): {test_id}")
        elif not outcomes[key].skipped:
            found.append(f"listed, but no longer skips (remove it from the list): {test_id}")
    return found


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    allow_list = Path(argv[1]) if len(argv) == 2 else DEFAULT_ALLOW_LIST
    try:
        found = problems(read_outcomes(Path(argv[0])), read_allow_list(allow_list), Path.cwd())
    except (OSError, ET.ParseError, ValueError) as exc:
        print(f"check_skips: {exc}", file=sys.stderr)
        return 2
    for problem in found:
        print(f"check_skips: {problem}", file=sys.stderr)
    if found:
        print(
            f"check_skips: {len(found)} problem(s); {allow_list} lists what may skip, and why",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

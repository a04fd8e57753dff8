"""scripts/check_skips.py on the junit report of a real pytest run: an unexpected skip fails CI, an allowed one
passes, and a listed test that no longer skips (or no longer exists) is reported too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKER = ROOT / "scripts" / "check_skips.py"
ALLOW_LIST = ROOT / "tests" / "allowed_skips.txt"

SAMPLE = """
import pytest

def test_runs():
    pass

def test_skips():
    pytest.skip("no such hardware")

@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_by_backend(backend):
    if backend == "postgres":
        pytest.skip("sqlite only")

class TestGroup:
    def test_skips_in_a_class(self):
        pytest.skip("not here")

@pytest.mark.xfail(reason="known bug")
def test_expected_to_fail():
    assert False
"""
SKIPPED_MODULE = """
import pytest

pytest.skip("the whole module needs a GPU", allow_module_level=True)
"""
SAMPLE_SKIPS = [
    "pkg/test_skipped_module.py",
    "pkg/test_sample.py::test_skips",
    "pkg/test_sample.py::test_by_backend[postgres]",
    "pkg/test_sample.py::TestGroup::test_skips_in_a_class",
    "pkg/test_sample.py::test_expected_to_fail",
]


@pytest.fixture(scope="module")
def junit_xml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The junit report of a real pytest run over SAMPLE (in a folder, like tests/unit/...)."""
    root = tmp_path_factory.mktemp("sample")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("")
    (root / "pkg" / "test_sample.py").write_text(SAMPLE)
    (root / "pkg" / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    (root / "pytest.ini").write_text("[pytest]\n")
    report = root / "junit.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", "pkg"],
        cwd=root, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 passed, 4 skipped, 1 xfailed" in run.stdout
    return report


def _check(junit_xml: Path, tmp_path: Path, allow_lines: list[str]) -> subprocess.CompletedProcess[str]:
    allow_list = tmp_path / "allowed_skips.txt"
    allow_list.write_text("# what may skip, and why\n\n" + "\n".join(allow_lines) + "\n")
    return subprocess.run(  # from the folder pytest ran in, as .ci/run does
        [sys.executable, str(CHECKER), str(junit_xml), str(allow_list)],
        cwd=junit_xml.parent, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_every_skip_listed_passes(junit_xml: Path, tmp_path: Path) -> None:
    result = _check(junit_xml, tmp_path, [f"{test_id}  a reason" for test_id in SAMPLE_SKIPS])
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("unlisted", SAMPLE_SKIPS)
def test_a_skip_not_listed_fails_and_is_named(junit_xml: Path, tmp_path: Path, unlisted: str) -> None:
    listed = [f"{test_id}  a reason" for test_id in SAMPLE_SKIPS if test_id != unlisted]
    result = _check(junit_xml, tmp_path, listed)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if "not in the allow-list" in line]
    assert len(problems) == 1
    assert f"skipped, not in the allow-list: {unlisted} (" in problems[0]  # its pytest id, ready to list


def test_the_skip_reason_is_shown(junit_xml: Path, tmp_path: Path) -> None:
    result = _check(junit_xml, tmp_path, [f"{test_id}  a reason" for test_id in SAMPLE_SKIPS[2:]])
    assert "no such hardware" in result.stderr
    assert "the whole module needs a GPU" in result.stderr


def test_a_listed_test_that_runs_is_reported(junit_xml: Path, tmp_path: Path) -> None:
    listed = [
        f"{test_id}  a reason" for test_id in [*SAMPLE_SKIPS, "pkg/test_sample.py::test_by_backend[sqlite]"]
    ]
    result = _check(junit_xml, tmp_path, listed)
    assert result.returncode == 1
    assert (
        "no longer skips (remove it from the list): pkg/test_sample.py::test_by_backend[sqlite]"
        in result.stderr
    )


def test_a_listed_test_that_is_gone_is_reported(junit_xml: Path, tmp_path: Path) -> None:
    listed = [f"{test_id}  a reason" for test_id in [*SAMPLE_SKIPS, "pkg/test_sample.py::test_renamed"]]
    result = _check(junit_xml, tmp_path, listed)
    assert result.returncode == 1
    assert "not in this run (renamed or removed?): pkg/test_sample.py::test_renamed" in result.stderr


def test_a_listed_test_without_a_reason_is_refused(junit_xml: Path, tmp_path: Path) -> None:
    result = _check(junit_xml, tmp_path, SAMPLE_SKIPS)
    assert result.returncode == 2
    assert "says no reason why it may skip" in result.stderr


def test_the_projects_allow_list_gives_a_reason_for_every_entry() -> None:
    lines = [
        line for line in ALLOW_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        test_id, _, reason = line.partition(" ")
        assert test_id.startswith("tests/")
        assert "::" in test_id
        assert len(reason.strip()) > 10, line

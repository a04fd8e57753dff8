"""`clipserve embed-dataset` command-line handling that needs no Ray run: the missing extra, bad flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from clipserve.cli import main


def test_without_ray_the_error_says_how_to_install_it(tmp_path: Path) -> None:
    # sys.modules["ray"] = None makes `import ray` raise ImportError, as on a machine without the extra.
    code = (
        "import sys; sys.modules['ray'] = None; from clipserve.cli import main; "
        f"sys.exit(main(['embed-dataset', {str(tmp_path)!r}, '--output', {str(tmp_path / 'out')!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 2, done.stderr
    assert "pip install 'clipserve[batch]'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "flags",
    [["--shard-size", "0"], ["--batch-size", "-1"], ["--actors", "two"], ["--dtype", "int8"]],
)
def test_bad_values_are_one_line_and_exit_code_2(
    flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["embed-dataset", str(tmp_path), "--output", str(tmp_path / "out"), *flags])
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_output_is_required(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["embed-dataset", str(tmp_path)])
    assert exited.value.code == 2
    assert "--output" in capsys.readouterr().err

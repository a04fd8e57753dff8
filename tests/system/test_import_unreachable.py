"""`clipserve collections import` with no server at --url: one clear line on stderr and exit status 1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import encode_image, gradient_image
from tests.system.conftest import free_port


def test_import_with_no_server_says_so_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "img0.png").write_bytes(encode_image(gradient_image(40, 30, seed=0)))
    port = free_port()  # bound and released: nothing listens there now
    url = f"http://127.0.0.1:{port}"
    done = subprocess.run(
        [sys.executable, "-m", "clipserve", "collections", "import", "holiday", str(folder), "--url", url],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        f"clipserve: error: no answer from {url}/ ([Errno 111] Connection refused); "
        "is a clipserve server running there? (--url)"
    ], done.stderr

"""The CLI is a package with one module per command on top of the library: nothing below imports it back."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import clipserve

PACKAGE = Path(clipserve.__file__).parent
COMMAND_MODULES = ("serve", "keys", "collections", "eval", "embed_dataset", "batch")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_module_outside_the_cli_package_imports_it() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "cli" not in path.relative_to(PACKAGE).parts[:1] and path.name != "__main__.py"
        if any(name == "clipserve.cli" or name.startswith("clipserve.cli.") for name in _imports(path))
    ]
    assert offenders == []


def test_each_command_has_its_module_and_the_parser_lists_them_all() -> None:
    from clipserve.cli.main import build_parser

    for name in COMMAND_MODULES:
        assert (PACKAGE / "cli" / f"{name}.py").is_file()
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert set(commands) == {"serve", "keys", "collections", "eval", "embed-dataset", "batch"}


def test_every_command_module_imports_first_in_a_fresh_interpreter() -> None:
    """Importing any one command module first works: no import cycle between the commands and the library."""
    for name in (*COMMAND_MODULES, "main", "settings_args", "model_loading"):
        done = subprocess.run(
            [sys.executable, "-c", f"import clipserve.cli.{name}"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, (name, done.stderr[-2000:])
    for module in ("clipserve.eval.run", "clipserve.runtime.loader"):
        done = subprocess.run(
            [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, (module, done.stderr[-2000:])

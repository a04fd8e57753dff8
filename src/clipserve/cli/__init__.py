"""The `clipserve` command line: main.py builds the parser from one module per subcommand."""

from clipserve.cli.main import build_parser, main

__all__ = ["build_parser", "main"]

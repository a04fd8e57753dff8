"""The `clipserve` command: one module per subcommand (serve, keys, collections, eval, embed-dataset)."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable, Sequence

import httpx
from pydantic import ValidationError

from clipserve import __version__
from clipserve.cli.batch import add_batch_commands
from clipserve.cli.collections import add_collections_commands
from clipserve.cli.embed_dataset import add_embed_dataset_command
from clipserve.cli.eval import add_eval_commands
from clipserve.cli.keys import add_keys_commands
from clipserve.cli.serve import add_serve_command
from clipserve.cli.settings_args import settings_from_args
from clipserve.config import Settings


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad command lines get one line on stderr (not the whole usage) and exit code 2; subcommands inherit it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="clipserve",
        description="clipserve: an OpenAI-compatible CLIP service (serve), its accounts (keys), bulk tools "
        "(collections, embed-dataset, batch) and evaluation (eval).",
    )
    parser.add_argument("--version", action="version", version=f"clipserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    add_keys_commands(commands)
    add_collections_commands(commands)
    add_batch_commands(commands)
    add_eval_commands(commands)
    add_embed_dataset_command(commands)
    return parser


def configure_logging(level: str) -> None:
    # No force=True: a host that configured logging already (pytest, an embedding app) keeps its handlers.
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        for error in exc.errors():  # one line each, naming the flag (and so the CLIPSERVE_* variable)
            where = (
                "--" + "-".join(str(p) for p in error["loc"]).replace("_", "-")
                if error["loc"]
                else "settings"
            )
            print(f"clipserve: error: {where}: {error['msg']}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        return handler(settings, args)
    except httpx.TransportError as exc:  # a client command (collections import) whose server is not there
        print(f"clipserve: error: {_transport_problem(exc)}", file=sys.stderr)
        return 1


def _transport_problem(exc: httpx.TransportError) -> str:
    """One line for a server that could not be reached or stopped answering, naming where it was asked."""
    try:
        url = str(exc.request.url.copy_with(path="/", query=None))
    except RuntimeError:  # an error raised before any request existed
        url = "the server"
    reason = str(exc) or type(exc).__name__
    return f"no answer from {url} ({reason}); is a clipserve server running there? (--url)"

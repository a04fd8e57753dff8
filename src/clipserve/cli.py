"""The `clipserve` command. Flags are generated from Settings, so CLI, env vars and docs never drift."""

from __future__ import annotations

import argparse
import logging
import sys
import typing
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import ValidationError

from clipserve import __version__
from clipserve.collections_cli import add_collections_commands
from clipserve.config import Settings
from clipserve.errors import WeightsUnavailableError
from clipserve.eval.cli import add_eval_commands
from clipserve.keys_cli import add_keys_commands

if TYPE_CHECKING:
    from clipserve.runtime.model import ClipRuntime
    from clipserve.store.database import Database

logger = logging.getLogger("clipserve")


MODEL_SETTINGS = (
    "data_dir", "weights", "model_cache_dir", "random_seed", "architecture", "device", "torch_threads",
    "decode_workers", "max_image_pixels", "truncate_text", "precision",
)  # fmt: skip


def add_settings_arguments(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One --flag per Settings field; unset flags fall back to CLIPSERVE_* env vars, then defaults."""
    for name, field in Settings.model_fields.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = f"CLIPSERVE_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description} [env {env}; default {default!s}]"
        annotation = field.annotation
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is list:
            kwargs.update(action="append", metavar="VALUE")
        else:
            choices = _literal_choices(annotation)
            if choices:
                kwargs["choices"] = choices
            kwargs["metavar"] = name.split("_")[-1].upper() if not choices else None
        parser.add_argument(flag, **kwargs)


def _literal_choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    return Settings(**overrides)


def configure_logging(level: str) -> None:
    # No force=True: a host that configured logging already (pytest, an embedding app) keeps its handlers.
    logging.basicConfig(format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level.upper())
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


def load_runtime(settings: Settings) -> ClipRuntime | None:
    """The model per settings, or None after printing why it could not load."""
    from clipserve.runtime.model import ClipRuntime, RuntimeSpec

    spec = RuntimeSpec(
        weights=settings.weights,
        architecture=settings.architecture,
        device=settings.device,
        torch_threads=settings.torch_threads,
        seed=settings.random_seed,
        cache_dir=settings.resolved_model_cache_dir,
        truncate_text=settings.truncate_text,
        precision=settings.precision,
        tokenizer_cache_bytes=settings.tokenizer_cache_bytes,
    )
    try:
        return ClipRuntime.load(spec)
    except (WeightsUnavailableError, RuntimeError) as exc:
        print(f"clipserve: error: {exc}", file=sys.stderr)
        return None


def open_accounts_database(settings: Settings) -> Database | None:
    """The migrated accounts database, or None after printing why serving would be unsafe or impossible."""
    from sqlalchemy.exc import SQLAlchemyError

    from clipserve.service.auth import exposure_problem
    from clipserve.store.accounts import AccountStore
    from clipserve.store.database import Database

    database = Database(settings.resolved_database_url)
    try:
        database.migrate()
        keys_exist = AccountStore(database).has_usable_keys()
    except SQLAlchemyError as exc:
        print(f"clipserve: error: accounts database {database.display_url}: {exc}", file=sys.stderr)
        return None
    problem = exposure_problem(settings.auth, keys_exist, settings.host, settings.allow_unauthenticated)
    if problem is not None:
        print(f"clipserve: error: {problem}", file=sys.stderr)
        return None
    if not keys_exist and settings.auth == "on":
        logger.warning("--auth on but no API key exists: every request will get 401 until one is created")
    return database


def run_serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from clipserve.api.app import create_app
    from clipserve.server import GuardedHttpProtocol

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logger.info("clipserve %s; data dir %s", __version__, settings.data_dir)
    database = open_accounts_database(settings)
    if database is None:
        return 2
    runtime = load_runtime(settings)
    if runtime is None:
        return 2
    if runtime.weights.is_random:
        banner = "!" * 78
        logger.warning(
            "\n%s\n  RANDOM WEIGHTS (seed %d): embeddings are meaningless. For development only.\n"
            "  Every response carries 'x-clipserve-weights: random'. Serve real weights with --weights.\n%s",
            banner, settings.random_seed, banner,
        )  # fmt: skip
    config = uvicorn.Config(
        create_app(settings, runtime, database),
        host=settings.host,
        port=settings.port,
        log_config=None,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_s),
        http=GuardedHttpProtocol.configured(settings),  # header/body timeouts, connection cap
        lifespan="on",
        # Never uvicorn's default (X-Forwarded-For believed from loopback): create_app applies
        # --trusted-proxies itself, the same in-process and here.
        proxy_headers=False,
    )
    uvicorn.Server(config).run()
    return 0


class OneLineArgumentParser(argparse.ArgumentParser):
    """Bad command lines get one line on stderr (not the whole usage) and exit code 2; subcommands inherit it."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(prog="clipserve", description=__doc__)
    parser.add_argument("--version", action="version", version=f"clipserve {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the OpenAI-compatible HTTP server. Every flag can also be set as an env var.",
    )
    add_settings_arguments(serve)
    serve.set_defaults(handler=run_serve)
    add_eval_commands(commands)
    add_keys_commands(commands, add_settings_arguments)
    add_collections_commands(commands)
    return parser


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

"""`clipserve serve`: the HTTP server on the accounts database and the model."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TYPE_CHECKING, Any

from clipserve import __version__
from clipserve.cli.model_loading import load_runtime
from clipserve.cli.settings_args import add_settings_arguments
from clipserve.config import Settings

if TYPE_CHECKING:
    from clipserve.store.database import Database

logger = logging.getLogger("clipserve")


def add_serve_command(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="start the HTTP server",
        description="Start the OpenAI-compatible HTTP server. Every flag can also be set as an env var.",
    )
    add_settings_arguments(serve)
    serve.set_defaults(handler=run_serve)


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

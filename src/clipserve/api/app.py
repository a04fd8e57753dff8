"""create_app(settings, runtime): wiring only. The lifespan builds pools, queues and the fetcher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy.exc import SQLAlchemyError
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clipserve import __version__
from clipserve.api import (
    routes_account,
    routes_account_keys,
    routes_admin,
    routes_batches,
    routes_classifiers,
    routes_classify,
    routes_collections,
    routes_embeddings,
    routes_files,
    routes_hf,
    routes_models,
    routes_ops,
    routes_rank,
    routes_rerank,
)
from clipserve.api.api_docs import install_api_docs
from clipserve.api.batch_execution import running_batches
from clipserve.api.cors import install_cors
from clipserve.api.dependencies import AppContext
from clipserve.api.errors import install_error_handlers
from clipserve.api.json_limits import JsonBodyParser
from clipserve.api.middleware import RequestContextMiddleware
from clipserve.api.openapi import install_openapi
from clipserve.api.root_aliases import root_alias_router
from clipserve.config import Settings
from clipserve.metrics import ServiceMetrics
from clipserve.model_card import HUB_ID
from clipserve.runtime.fair_queue import FairExecutor
from clipserve.runtime.fetch import ImageFetcher
from clipserve.runtime.foreground_gate import BackgroundLane, ForegroundGate
from clipserve.runtime.heap import freeze_long_lived, unfreeze
from clipserve.runtime.model import ClipRuntime
from clipserve.service.auth import Authenticator
from clipserve.service.batch_files import FileStorage, delete_expired_files
from clipserve.service.classifiers import ClassifierLimits, ClassifierService
from clipserve.service.classify import ClassificationService, ClassifyLimits
from clipserve.service.client_address import trusted_proxy_hosts
from clipserve.service.collections import CollectionLimits, CollectionService
from clipserve.service.embeddings import EmbeddingService, ImageLimits
from clipserve.service.encoder_queues import EncoderQueues
from clipserve.service.inputs import InputLimits
from clipserve.service.metering import Meter, RateLimitDefaults
from clipserve.service.passwords import PasswordHashing, argon2id_hasher
from clipserve.service.pricing import PriceTable, dollars_to_micros
from clipserve.service.prompt_cache import PromptCache
from clipserve.service.prompts import PromptEncoder
from clipserve.service.rank import RankService
from clipserve.service.signin_throttle import SigninThrottle, ThrottleLimits
from clipserve.service.web_accounts import SignupPolicy, WebAccounts
from clipserve.store.accounts import AccountStore
from clipserve.store.batches import BatchStore
from clipserve.store.classifiers import ClassifierStore
from clipserve.store.collections import CollectionCatalogue
from clipserve.store.database import Database
from clipserve.store.ledger import LedgerStore, LedgerTimeouts
from clipserve.store.logins import LoginStore
from clipserve.store.web_sessions import SessionLifetimes, WebSessionStore
from clipserve.vectors.base import VectorStore
from clipserve.vectors.embedded import EmbeddedVectorStore
from clipserve.vectors.memory_index import AnnSettings
from clipserve.web import install_web

logger = logging.getLogger(__name__)

# Twice the model's 224: the bicubic antialiased resize after the draft still averages >= 2x2 pixels per output.
JPEG_DRAFT_MIN_SIDE = 448
PURGE_INTERVAL_S = 300.0
RANDOM_WEIGHTS_HEADER = ("x-clipserve-weights", "random; embeddings are meaningless")


def create_app(
    settings: Settings,
    runtime: ClipRuntime,
    database: Database | None = None,
    password_hasher: PasswordHasher | None = None,
) -> FastAPI:
    """The HTTP app around an already-loaded runtime; the database defaults to settings.database_url, the
    password hasher to argon2id with the settings' costs."""
    context = AppContext(
        settings=settings,
        runtime=runtime,
        metrics=ServiceMetrics(),
        input_limits=InputLimits(settings.max_items_per_request, settings.max_text_chars),
        started_at=int(time.time()),
        database=database,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        context.body_parser = JsonBodyParser.from_settings(settings)
        try:
            async with (
                _open_accounts(context, password_hasher),
                _running_services(context),
                running_batches(context),  # stopped first: its lines leave the model queues before they drain
            ):
                yield
        finally:
            context.body_parser.close()

    app = FastAPI(
        title="clipserve",
        version=__version__,
        description="OpenAI-compatible CLIP embeddings (laion/CLIP-ViT-B-32-laion2B-s34B-b79K)",
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from api_docs.py, with their assets served from this host
        redoc_url=None,
    )
    app.state.context = context
    install_error_handlers(app)
    for module in (
        routes_embeddings, routes_classify, routes_rank, routes_collections, routes_models, routes_ops,
        routes_account, routes_admin, routes_rerank, routes_hf, routes_account_keys, routes_classifiers,
        routes_files, routes_batches,
    ):  # fmt: skip
        app.include_router(module.router)
    # /embeddings, /models: Infinity's clients call the root (/rerank is routes_rerank's own shape)
    app.include_router(routes_models.infinity_router)  # GET /models in Infinity's shape
    app.include_router(
        root_alias_router(
            routes_embeddings.router, routes_models.router, served_elsewhere=frozenset({"/models"})
        )
    )
    install_openapi(app)
    install_api_docs(app)
    if settings.web_pages_enabled:  # the site at / (clipserve/web): pages over this same JSON API
        install_web(app, settings)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=context.metrics,
        max_body_bytes=settings.max_request_bytes,
        larger_bodies={"/v1/files": routes_files.upload_body_limit(settings)},
        extra_headers=[RANDOM_WEIGHTS_HEADER] if runtime.weights.is_random else [],
    )
    if settings.trusted_proxies:  # X-Forwarded-For names the client only when a configured proxy sent it
        app.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=trusted_proxy_hosts(settings.trusted_proxies)
        )
    install_cors(app, settings)  # outermost: a preflight is answered before auth, limits or body caps
    return app


@asynccontextmanager
async def _open_accounts(
    context: AppContext, password_hasher: PasswordHasher | None = None
) -> AsyncIterator[None]:
    """The store (migrated), the authenticator and the meter, with their own small thread pool."""
    settings = context.settings
    owned = context.database is None
    database = context.database or Database(settings.resolved_database_url)
    pool = ThreadPoolExecutor(4, thread_name_prefix="clipserve-db")
    loop = asyncio.get_running_loop()
    if owned:  # a database handed in (clipserve serve) was migrated by whoever opened it
        await loop.run_in_executor(pool, database.migrate)
    accounts = AccountStore(database)
    ledger = LedgerStore(
        database, timeouts=LedgerTimeouts(settings.credit_hold_s, settings.idempotency_ttl_s)
    )
    context.database, context.accounts, context.ledger = database, accounts, ledger
    context.batches, context.batch_files = BatchStore(database), FileStorage.from_settings(settings)
    context.authenticator = Authenticator(accounts, pool, settings.auth)
    context.meter = Meter(
        ledger,
        PriceTable(
            settings.price_per_1k_images, settings.price_per_1m_tokens, settings.charge_cached_prompts
        ),
        RateLimitDefaults(
            settings.rate_limit_requests_per_minute,
            settings.rate_limit_images_per_minute,
            settings.rate_limited_answer_delay_s,
            settings.max_delayed_rate_limited_answers,
            settings.rate_limit_burst_requests,
            settings.rate_limit_burst_images,
        ),
        pool,
    )
    context.web_accounts = _web_accounts(context, accounts, password_hasher, pool)
    required = await context.authenticator.auth_required()
    logger.info(
        "accounts database %s; authentication %s",
        database.display_url,
        "required" if required else f"OFF (--auth {settings.auth}; no API key exists yet)",
    )
    await loop.run_in_executor(pool, ledger.heartbeat)
    context.vectors = await loop.run_in_executor(pool, lambda: open_vector_store(settings, database))
    # Collections get their own threads (a large index load must not stall auth and billing), and the
    # heartbeat its own (a late heartbeat would make other replicas think this one dead).
    context.store_pool = pool
    context.vector_pool = ThreadPoolExecutor(4, thread_name_prefix="clipserve-vectors")
    upkeep_thread = ThreadPoolExecutor(1, thread_name_prefix="clipserve-upkeep")
    batches, batch_files = context.batches, context.batch_files
    upkeep = asyncio.create_task(
        _ledger_upkeep(ledger, upkeep_thread, [lambda: delete_expired_files(batches, batch_files)])
    )
    try:
        yield
    finally:
        upkeep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await upkeep
        context.vectors.close()
        context.vector_pool.shutdown(wait=True)
        upkeep_thread.shutdown(wait=True)
        context.web_accounts.close()
        pool.shutdown(wait=True)
        if owned:
            database.close()


def _web_accounts(
    context: AppContext,
    accounts: AccountStore,
    password_hasher: PasswordHasher | None,
    pool: ThreadPoolExecutor,
) -> WebAccounts:
    settings = context.settings
    logins = LoginStore(accounts)
    hasher = password_hasher or argon2id_hasher(
        settings.password_hash_time_cost, settings.password_hash_memory_kib
    )
    authenticator = context.authenticator
    return WebAccounts(
        logins,
        WebSessionStore(
            accounts.db, SessionLifetimes(settings.session_idle_s, settings.session_max_age_s), accounts.clock
        ),
        PasswordHashing(hasher, settings.password_hash_concurrency, settings.password_hash_queue),
        SigninThrottle(
            logins,
            ThrottleLimits(
                settings.signin_failures_per_account,
                settings.signin_failures_per_address,
                settings.signin_throttle_window_s,
            ),
        ),
        SignupPolicy(
            settings.signup_enabled,
            dollars_to_micros(settings.signup_credit),
            settings.signups_per_address_per_day,
            settings.password_min_length,
        ),
        pool,
        on_key_created=authenticator.key_created if authenticator is not None else lambda: None,
    )


def open_vector_store(settings: Settings, database: Database) -> VectorStore:
    """Milvus when CLIPSERVE_VECTOR_URL is set, else the embedded store in the accounts database."""
    if settings.vector_url:
        from clipserve.vectors.milvus import MilvusVectorStore

        logger.info("collections in Milvus at %s", settings.vector_url)
        return MilvusVectorStore(settings.vector_url, settings.vector_token)
    return EmbeddedVectorStore(database, AnnSettings(exact_max_items=settings.exact_search_max_items))


async def _ledger_upkeep(
    ledger: LedgerStore, pool: ThreadPoolExecutor, purges: Sequence[Callable[[], object]] = ()
) -> None:
    """Heartbeat (so this process's credit holds keep counting) and purge what has expired (`purges` too)."""
    loop = asyncio.get_running_loop()
    last_purge = float("-inf")
    while True:
        try:
            await loop.run_in_executor(pool, ledger.heartbeat)
            if time.monotonic() - last_purge >= PURGE_INTERVAL_S:
                for purge in (ledger.purge_expired, *purges):
                    await loop.run_in_executor(pool, purge)
                last_purge = time.monotonic()
        except SQLAlchemyError:
            logger.exception("ledger upkeep failed (database unreachable?); will retry")
        await asyncio.sleep(ledger.timeouts.heartbeat_s)


@asynccontextmanager
async def _running_services(context: AppContext) -> AsyncIterator[None]:
    settings, runtime, metrics = context.settings, context.runtime, context.metrics
    # One compute thread: torch already spreads one batch over every core; two would fight.
    compute = ThreadPoolExecutor(1, thread_name_prefix="clipserve-compute")
    # Decoding and tokenizing serve accounts round-robin, like the batches (runtime/fair_queue.py).
    decode = FairExecutor(settings.decode_workers, thread_name_prefix="clipserve-decode")
    # Batch API work: its own thread, pausing at the model's yield points while online work is in the house.
    background_compute = ThreadPoolExecutor(1, thread_name_prefix="clipserve-background-compute")
    gate = ForegroundGate()
    yield_points = runtime.add_yield_points(gate.yield_point) if settings.batch_yields else []
    background = BackgroundLane(gate, background_compute) if yield_points else None
    queues = EncoderQueues.create(runtime, settings, compute, metrics, background)
    metrics.watch_queue("images", lambda: queues.images.depth)
    metrics.watch_queue("texts", lambda: queues.texts.depth)
    fetcher = ImageFetcher.from_settings(settings)
    await fetcher.start()
    context.compute_pool = compute
    context.background_compute_pool = background_compute
    context.queues = queues
    embeddings = EmbeddingService(
        runtime,
        queues,
        fetcher,
        decode,
        ImageLimits(
            settings.max_image_bytes,
            settings.max_image_pixels,
            draft_min_side=JPEG_DRAFT_MIN_SIDE if settings.jpeg_draft else None,
            max_aspect_ratio=settings.max_image_aspect_ratio,
        ),
    )
    prompt_cache = PromptCache(
        settings.prompt_cache_size, HUB_ID, runtime.weights.fingerprint, max_bytes=settings.prompt_cache_bytes
    )
    metrics.watch_prompt_cache(prompt_cache)
    context.embeddings = embeddings
    context.classification = ClassificationService(
        embeddings,
        PromptEncoder(embeddings, prompt_cache, chunk_size=settings.max_items_per_request),
        runtime.logit_scale,
        ClassifyLimits(
            settings.max_classify_images,
            settings.max_labels,
            settings.max_prompts_per_request,
            max_label_chars=settings.max_label_chars,
        ),
    )
    # the query travels with the documents, so one request holds at most max_items_per_request - 1 of them
    context.ranking = RankService(
        embeddings, min(settings.max_rank_documents, settings.max_items_per_request - 1)
    )
    assert context.vectors is not None
    assert context.vector_pool is not None
    assert context.database is not None  # the accounts lifespan opened it
    context.collections = CollectionService(
        CollectionCatalogue(context.database),
        context.vectors,
        embeddings,
        context.vector_pool,
        context.input_limits,
        CollectionLimits.from_settings(settings),
    )
    # custom classifiers (issue 15): training on its own fair pool, never on the event loop
    train = FairExecutor(settings.classifier_train_workers, thread_name_prefix="clipserve-train")
    assert context.store_pool is not None
    context.classifiers = ClassifierService(
        ClassifierStore(context.database),
        embeddings,
        context.classification.prompt_encoder,
        runtime.logit_scale,
        context.store_pool,
        train,
        context.input_limits,
        ClassifierLimits.from_settings(settings),
    )
    # deletes a crash or a store error interrupted: finished once now, then retried periodically
    await context.collections.finish_pending_deletes()
    sweeping = asyncio.create_task(context.collections.sweep_pending_deletes())
    queues.start()
    warming = asyncio.create_task(_warm_up(context, compute))
    try:
        yield
    finally:
        context.ready = False
        metrics.ready.set(0)
        sweeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeping
        await warming
        logger.info("draining: finishing %d queued items", queues.images.depth + queues.texts.depth)
        await queues.stop()
        await fetcher.close()
        compute.shutdown(wait=True)
        background_compute.shutdown(wait=True)
        for handle in yield_points:
            handle.remove()
        decode.shutdown(wait=True)
        train.shutdown(wait=True)
        if settings.freeze_startup_heap:
            unfreeze()
        logger.info("stopped")


async def _warm_up(context: AppContext, compute: ThreadPoolExecutor) -> None:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(compute, context.runtime.warmup)
    if context.settings.freeze_startup_heap:
        frozen = await loop.run_in_executor(compute, freeze_long_lived)
        logger.info("%d long-lived objects exempted from garbage collection", frozen)
    context.ready = True
    context.metrics.ready.set(1)
    logger.info("ready (warm-up took %.2fs)", time.perf_counter() - started)

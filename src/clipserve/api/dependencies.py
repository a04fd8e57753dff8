"""Small getters that hand routes their typed services (no globals)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from fastapi import Request

from clipserve.api.json_limits import JsonBodyParser
from clipserve.config import Settings
from clipserve.errors import ServiceUnavailableError
from clipserve.metrics import ServiceMetrics
from clipserve.runtime.model import ClipRuntime
from clipserve.service.auth import Authenticator
from clipserve.service.batch_files import FileStorage
from clipserve.service.batch_runner import BatchRunner
from clipserve.service.classifiers import ClassifierService
from clipserve.service.classify import ClassificationService
from clipserve.service.collections import CollectionService
from clipserve.service.embeddings import EmbeddingService
from clipserve.service.encoder_queues import EncoderQueues
from clipserve.service.inputs import InputLimits
from clipserve.service.metering import Meter
from clipserve.service.rank import RankService
from clipserve.service.web_accounts import WebAccounts
from clipserve.store.accounts import AccountStore
from clipserve.store.batches import BatchStore
from clipserve.store.database import Database
from clipserve.store.ledger import LedgerStore
from clipserve.vectors.base import VectorStore

ServiceT = TypeVar("ServiceT")
T = TypeVar("T")


@dataclass
class AppContext:
    """Everything the app holds; built by create_app, filled in by the lifespan."""

    settings: Settings
    runtime: ClipRuntime
    metrics: ServiceMetrics
    input_limits: InputLimits
    embeddings: EmbeddingService | None = None
    queues: EncoderQueues | None = None
    classification: ClassificationService | None = None
    ranking: RankService | None = None
    compute_pool: ThreadPoolExecutor | None = None
    background_compute_pool: ThreadPoolExecutor | None = None  # Batch API model calls (with --batch-yields)
    store_pool: ThreadPoolExecutor | None = None  # accounts and ledger calls
    vector_pool: ThreadPoolExecutor | None = None  # collections' vector-store calls
    database: Database | None = None
    accounts: AccountStore | None = None
    ledger: LedgerStore | None = None
    authenticator: Authenticator | None = None
    meter: Meter | None = None
    vectors: VectorStore | None = None
    collections: CollectionService | None = None
    body_parser: JsonBodyParser | None = None  # large JSON bodies (api/bodies.py)
    web_accounts: WebAccounts | None = None  # web logins and sessions (issue 12)
    classifiers: ClassifierService | None = None  # custom classifiers (issue 15)
    batches: BatchStore | None = None  # the Batch API's files and batches (issue 13)
    batch_files: FileStorage | None = None  # their bytes
    batch_runner: BatchRunner | None = None  # runs the Batch API's lines (issue 13; wake() after a change)
    ready: bool = False
    started_at: int = field(default=0)


def get_context(request: Request) -> AppContext:
    context: AppContext = request.app.state.context
    return context


def started(service: ServiceT | None) -> ServiceT:
    """The service, once the lifespan has built it; 503 while the app is starting up."""
    if service is None:
        raise ServiceUnavailableError("the service is starting up; retry shortly")
    return service


def get_embedding_service(request: Request) -> EmbeddingService:
    return started(get_context(request).embeddings)


def get_classification_service(request: Request) -> ClassificationService:
    return started(get_context(request).classification)


def get_rank_service(request: Request) -> RankService:
    return started(get_context(request).ranking)


def get_accounts(request: Request) -> AccountStore:
    return started(get_context(request).accounts)


def get_ledger(request: Request) -> LedgerStore:
    return started(get_context(request).ledger)


def get_web_accounts(request: Request) -> WebAccounts:
    return started(get_context(request).web_accounts)


def get_collection_service(request: Request) -> CollectionService:
    return started(get_context(request).collections)


def get_classifier_service(request: Request) -> ClassifierService:
    return started(get_context(request).classifiers)


async def run_store(request: Request, call: Callable[[], T]) -> T:
    """Run a blocking accounts/ledger call on the store's threads."""
    pool = started(get_context(request).store_pool)
    return await asyncio.get_running_loop().run_in_executor(pool, call)

"""What /v1/embeddings means: turn parsed items into unit vectors, through the decode pool and batch queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from clipserve.errors import ClipserveError, ImageTooLargeError, InvalidRequestError
from clipserve.runtime.batcher import Batched, Reservation
from clipserve.runtime.fetch import ImageFetcher, decode_inline_image, is_remote_source
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, TokenizedTexts
from clipserve.service.encoder_queues import EncoderQueues
from clipserve.service.inputs import ImageItem, InputItem, TextItem

T = TypeVar("T")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    fetch_concurrency: int
    draft_min_side: int | None = None  # JPEG DCT-domain downscaling floor; None decodes at full size


@dataclass(frozen=True)
class RequestTimings:
    """Where a request's time went (seconds)."""

    decode_s: float = 0.0  # fetch + decode + preprocess + tokenize
    queue_s: float = 0.0  # longest wait of any item for its batch
    compute_s: float = 0.0  # model time of the batches that carried this request's items


@dataclass(frozen=True)
class EmbeddingResult:
    vectors: np.ndarray  # [n, embed_dim] float32, unit length, in input order
    text_tokens: int
    token_counts: list[int]  # per text item, in the order texts appear in the input
    image_count: int
    timings: RequestTimings


class EmbeddingService:
    def __init__(
        self,
        runtime: ClipRuntime,
        queues: EncoderQueues,
        fetcher: ImageFetcher,
        decode_pool: Executor,
        limits: ImageLimits,
    ) -> None:
        self._runtime = runtime
        self._queues = queues
        self._fetcher = fetcher
        self._decode_pool = decode_pool
        self._limits = limits

    @property
    def embed_dim(self) -> int:
        return self._runtime.embed_dim

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and dimensions != self._runtime.embed_dim:
            raise InvalidRequestError(
                f"dimensions={dimensions} is not supported: this model's embeddings have exactly "
                f"{self._runtime.embed_dim} dimensions (CLIP is not Matryoshka-trained, so truncating would "
                f"degrade them); omit 'dimensions' or send {self._runtime.embed_dim}",
                param="dimensions",
            )

    async def embed(self, items: Sequence[InputItem]) -> EmbeddingResult:
        """Embed every item; any invalid item fails the request (4xx) without touching other requests."""
        texts = [(i, item) for i, item in enumerate(items) if isinstance(item, TextItem)]
        images = [(i, item) for i, item in enumerate(items) if isinstance(item, ImageItem)]
        # Admission first: a full queue answers 503 before any decoding work is spent.
        with (
            self._queues.texts.reserve(len(texts)) as text_slots,
            self._queues.images.reserve(len(images)) as image_slots,
        ):
            started = time.perf_counter()
            tokenized, pixels = await self._prepare([t.text for _, t in texts], [im for _, im in images])
            decode_s = time.perf_counter() - started
            futures = self._submit(text_slots, image_slots, tokenized, pixels)
        results = await asyncio.gather(*futures)

        vectors = np.empty((len(items), self._runtime.embed_dim), dtype=np.float32)
        for (index, _), result in zip([*texts, *images], results, strict=True):
            vectors[index] = result.value
        return EmbeddingResult(
            vectors=vectors,
            text_tokens=sum(tokenized.token_counts) if tokenized else 0,
            token_counts=tokenized.token_counts if tokenized else [],
            image_count=len(images),
            timings=_timings(decode_s, results),
        )

    def _submit(
        self,
        text_slots: Reservation,
        image_slots: Reservation,
        tokenized: TokenizedTexts | None,
        pixels: list[torch.Tensor],
    ) -> list[asyncio.Future[Batched[np.ndarray]]]:
        futures = []
        if tokenized is not None:
            futures += self._queues.texts.submit(text_slots, list(tokenized.ids))
        if pixels:
            futures += self._queues.images.submit(image_slots, pixels)
        return futures

    async def _prepare(
        self, texts: list[str], images: list[ImageItem]
    ) -> tuple[TokenizedTexts | None, list[torch.Tensor]]:
        loop = asyncio.get_running_loop()
        tokenizing = loop.run_in_executor(self._decode_pool, self._runtime.tokenize, texts) if texts else None
        fetch_gate = asyncio.Semaphore(self._limits.fetch_concurrency)
        pixels = await _gather_or_cancel([self._load_image(item, fetch_gate) for item in images])
        tokenized = await tokenizing if tokenizing is not None else None
        return tokenized, pixels

    async def _load_image(self, item: ImageItem, fetch_gate: asyncio.Semaphore) -> torch.Tensor:
        loop = asyncio.get_running_loop()
        try:
            if is_remote_source(item.source):
                async with fetch_gate:
                    data = await self._fetcher.fetch(item.source)
                return await loop.run_in_executor(self._decode_pool, self._decode_bytes, data)
            return await loop.run_in_executor(self._decode_pool, self._decode_inline, item.source)
        except ClipserveError as exc:
            exc.param = exc.param or item.param
            exc.message = f"{item.param}: {exc.message}"
            raise

    def _decode_inline(self, source: str) -> torch.Tensor:
        return self._decode_bytes(decode_inline_image(source, max_bytes=self._limits.max_bytes))

    def _decode_bytes(self, data: bytes) -> torch.Tensor:
        if len(data) > self._limits.max_bytes:
            raise ImageTooLargeError(f"image is {len(data)} bytes; the limit is {self._limits.max_bytes}")
        image = decode_image(
            data, max_pixels=self._limits.max_pixels, draft_min_side=self._limits.draft_min_side
        )
        return self._runtime.preprocess(image)


async def _gather_or_cancel(coros: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; results in order, or the first error with the others cancelled."""
    tasks = [asyncio.ensure_future(coro) for coro in coros]
    if not tasks:
        return []
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and (error := task.exception()) is not None:
                raise error
        return [task.result() for task in tasks]
    finally:
        for task in tasks:
            task.cancel()


def _timings(decode_s: float, results: Sequence[Batched[np.ndarray]]) -> RequestTimings:
    compute_by_batch = {(r.timing.queue, r.timing.batch_id): r.timing.compute_s for r in results}
    return RequestTimings(
        decode_s=decode_s,
        queue_s=max((r.timing.queue_s for r in results), default=0.0),
        compute_s=sum(compute_by_batch.values()),
    )

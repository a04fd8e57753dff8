"""What /v1/embeddings means: turn parsed items into unit vectors, through the decode pool and batch queues."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch

from clipserve.errors import ClipserveError, ImageTooLargeError, InvalidRequestError
from clipserve.runtime.batcher import Batched, Reservation
from clipserve.runtime.fair_queue import FairExecutor
from clipserve.runtime.fetch import ImageFetcher, decode_inline_image, is_remote_source
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime, TokenizedTexts
from clipserve.service.encoder_queues import EncoderQueues
from clipserve.service.gather import gather_or_cancel as _gather_or_cancel
from clipserve.service.inputs import ImageItem, InputItem, TextItem

T = TypeVar("T")
# A few ms of cleaning and tokenizing for ordinary text: how long another account's decode job may wait behind
# one tokenizing job of a big request.
TOKENIZE_CHUNK_CHARS = 16_384


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    draft_min_side: int | None = None  # JPEG DCT-domain downscaling floor; None decodes at full size
    max_aspect_ratio: float | None = None  # longest side / shortest side; None: no cap


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


@dataclass(frozen=True)
class ItemResults:
    """embed_each's answer: per input item, in input order, its unit vector or the input error it failed with."""

    outcomes: list[np.ndarray | ClipserveError]
    text_tokens: int  # of the texts (which fail only with the whole request)
    image_count: int  # images embedded; the failed ones are not counted
    timings: RequestTimings


@dataclass(frozen=True)
class _Encoded:
    """What _encode_all produced: per item index, its batched vector or (isolated) input error."""

    results: dict[int, Batched[np.ndarray] | ClipserveError]
    tokenized: TokenizedTexts | None
    image_count: int  # images embedded
    timings: RequestTimings

    @property
    def text_tokens(self) -> int:
        return sum(self.tokenized.token_counts) if self.tokenized else 0


class EmbeddingService:
    def __init__(
        self,
        runtime: ClipRuntime,
        queues: EncoderQueues,
        fetcher: ImageFetcher,
        decode_pool: FairExecutor,
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

    async def embed(
        self,
        items: Sequence[InputItem],
        *,
        account: str,
        images_queued: asyncio.Event | None = None,
        texts_after: asyncio.Event | None = None,
    ) -> EmbeddingResult:
        """Embed every item; any invalid item fails the request (4xx) without touching other requests.

        `account` is whose fair share of URL connections and decode-ahead slots the images wait for: one
        account's thousand images queue behind each other, not in front of another account's one.
        `images_queued` is set once every image is fetched, decoded and queued for the model; texts are
        admitted and tokenized at once but reach the model only after `texts_after` is set (classify: its
        prompts are not encoded for an image that fails).
        """
        encoded = await self._encode_all(
            items, account, isolate_input_errors=False, images_queued=images_queued, texts_after=texts_after
        )
        vectors = np.empty((len(items), self._runtime.embed_dim), dtype=np.float32)
        for index, result in encoded.results.items():
            assert not isinstance(result, ClipserveError)  # raised, not kept, without isolate_input_errors
            vectors[index] = result.value
        return EmbeddingResult(
            vectors=vectors,
            text_tokens=encoded.text_tokens,
            token_counts=encoded.tokenized.token_counts if encoded.tokenized else [],
            image_count=encoded.image_count,
            timings=encoded.timings,
        )

    async def embed_each(self, items: Sequence[InputItem], *, account: str) -> ItemResults:
        """Embed every item under ONE admission, as embed() does, but let a bad input fail only its own item.

        Admission is all or nothing: a full queue (or a stopping one) refuses the whole request (503) before
        anything is fetched, decoded or embedded. After that, an input error of one image (undecodable, too
        large, refused aspect ratio, fetch failed: any 4xx) becomes that item's result; anything else (a
        queue error, a 5xx, a cancellation) fails the whole request and cancels the rest of its work.
        """
        encoded = await self._encode_all(items, account, isolate_input_errors=True)
        return ItemResults(
            outcomes=[
                r if isinstance(r := encoded.results[i], ClipserveError) else r.value
                for i in range(len(items))
            ],
            text_tokens=encoded.text_tokens,
            image_count=encoded.image_count,
            timings=encoded.timings,
        )

    async def _encode_all(
        self,
        items: Sequence[InputItem],
        account: str,
        *,
        isolate_input_errors: bool,
        images_queued: asyncio.Event | None = None,
        texts_after: asyncio.Event | None = None,
    ) -> _Encoded:
        """Admit the request whole, then tokenize, fetch, decode and encode its items on the account's turns.

        The first failure (a text that fails to tokenize, an image that fails, or with `isolate_input_errors`
        only a service error) cancels the rest; an isolated input error becomes its item's result.
        """
        texts = [(i, item) for i, item in enumerate(items) if isinstance(item, TextItem)]
        images = [(i, item) for i, item in enumerate(items) if isinstance(item, ImageItem)]
        inline_bytes = sum(_inline_size(im.source) for _, im in images if not is_remote_source(im.source))
        # Admission first: a full queue (items or bytes) answers 503 before any decoding work is spent.
        with (
            self._queues.texts.reserve(len(texts), tenant=account) as text_slots,
            self._queues.images.reserve(len(images), inline_bytes, tenant=account) as image_slots,
        ):
            started = time.perf_counter()
            prepared: list[float] = []  # when each payload reached its queue
            decode_pool = self._decode_pool.for_tenant(account)
            text_job = (
                asyncio.ensure_future(
                    self._encode_texts(
                        [t.text for _, t in texts], text_slots, decode_pool, prepared, texts_after
                    )
                )
                if texts
                else None
            )

            unqueued = len(images)
            if images_queued is not None and not images:
                images_queued.set()

            def image_queued() -> None:
                nonlocal unqueued
                unqueued -= 1
                if images_queued is not None and unqueued == 0:
                    images_queued.set()

            def image_job(item: ImageItem) -> asyncio.Future[Batched[np.ndarray] | ClipserveError]:
                work = self._encode_image(item, image_slots, account, decode_pool, prepared, image_queued)
                return asyncio.ensure_future(_input_error_apart(work) if isolate_input_errors else work)

            image_jobs = [image_job(item) for _, item in images]
            jobs: list[asyncio.Future[Any]] = [*image_jobs, *([text_job] if text_job is not None else [])]
            await _gather_or_cancel(jobs)
            image_results = [job.result() for job in image_jobs]
            tokenized, text_results = text_job.result() if text_job is not None else (None, [])
        indices = [i for i, _ in [*texts, *images]]
        results = dict(zip(indices, [*text_results, *image_results], strict=True))
        embedded = [r for r in results.values() if not isinstance(r, ClipserveError)]
        return _Encoded(
            results=results,
            tokenized=tokenized,
            image_count=sum(not isinstance(r, ClipserveError) for r in image_results),
            timings=_timings(max(prepared, default=started) - started, embedded),
        )

    async def _encode_texts(
        self,
        texts: list[str],
        slots: Reservation,
        decode_pool: Executor,
        prepared: list[float],
        after: asyncio.Event | None,
    ) -> tuple[TokenizedTexts, list[Batched[np.ndarray]]]:
        loop = asyncio.get_running_loop()
        # Tokenized in bounded chunks, each its own job on the round-robin decode pool, so a request of many
        # long texts holds a decode thread for one chunk at a time, not for the whole request.
        parts = await asyncio.gather(
            *(
                loop.run_in_executor(decode_pool, self._runtime.tokenize, chunk)
                for chunk in _text_chunks(texts)
            )
        )
        tokenized = TokenizedTexts(
            torch.cat([part.ids for part in parts]), [n for part in parts for n in part.token_counts]
        )
        if after is not None:
            await after.wait()
        futures = self._queues.texts.submit(slots, list(tokenized.ids))
        prepared.append(time.perf_counter())
        return tokenized, await asyncio.gather(*futures)

    async def _encode_image(
        self,
        item: ImageItem,
        slots: Reservation,
        account: str,
        decode_pool: Executor,
        prepared: list[float],
        queued: Callable[[], None],
    ) -> Batched[np.ndarray]:
        """Fetch (on the account's connections), decode once the model has room, and queue one image.

        A decoded image holds a decode-ahead slot until its batch has run, so decoded tensors in memory
        stay bounded however many images are admitted; a fetched image keeps its connection slot until
        it may decode, so fetched bytes waiting for the decoder are bounded by the connection pool.
        """
        loop = asyncio.get_running_loop()
        try:
            if is_remote_source(item.source):
                async with self._fetcher.connection(account):
                    data = await self._fetcher.fetch(item.source)
                    slots.hold_bytes(len(data))
                    release = await self._queues.decoded.acquire(account)
                decode: Callable[[], torch.Tensor] = partial(self._decode_bytes, data)
                held = len(data)
                del data  # only the decode job keeps the encoded bytes
            else:
                release = await self._queues.decoded.acquire(account)
                decode, held = partial(self._decode_inline, item.source), _inline_size(item.source)
            try:
                pixels = await loop.run_in_executor(decode_pool, decode)
            except BaseException:
                release()
                raise
            finally:
                slots.drop_bytes(held)
                del decode
            (future,) = self._queues.images.submit(slots, [pixels])
            prepared.append(time.perf_counter())
            queued()
            future.add_done_callback(lambda _: release())
            return await future
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
            data,
            max_pixels=self._limits.max_pixels,
            max_aspect_ratio=self._limits.max_aspect_ratio,
            draft_min_side=self._limits.draft_min_side,
        )
        return self._runtime.preprocess(image)


async def _input_error_apart(work: Awaitable[T]) -> T | ClipserveError:
    """The item's input error as its result; service errors (5xx: queue full, shutting down) still raise."""
    try:
        return await work
    except ClipserveError as exc:
        if exc.status_code >= 500:
            raise
        return exc


def _text_chunks(texts: list[str]) -> list[list[str]]:
    """Consecutive runs of texts of at most TOKENIZE_CHUNK_CHARS characters (or one longer text)."""
    chunks: list[list[str]] = [[]]
    size = 0
    for text in texts:
        if chunks[-1] and size + len(text) > TOKENIZE_CHUNK_CHARS:
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += len(text)
    return chunks


def _inline_size(source: str) -> int:
    """The decoded size of an inline (base64) image, counted against the queue's bytes at admission."""
    return len(source) * 3 // 4


def _timings(decode_s: float, results: Sequence[Batched[np.ndarray]]) -> RequestTimings:
    compute_by_batch = {(r.timing.queue, r.timing.batch_id): r.timing.compute_s for r in results}
    return RequestTimings(
        decode_s=decode_s,
        queue_s=max((r.timing.queue_s for r in results), default=0.0),
        compute_s=sum(compute_by_batch.values()),
    )

"""The two batch queues in front of the model (images, texts), sharing one compute thread, and the
decode-ahead slots that bound how many decoded images wait for the image queue."""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np
import torch

from clipserve.config import Settings
from clipserve.runtime.batcher import BatchObserver, DynamicBatcher
from clipserve.runtime.fair_slots import FairSlots
from clipserve.runtime.foreground_gate import BackgroundLane
from clipserve.runtime.model import ClipRuntime
from clipserve.runtime.tenant_activity import TenantActivity

ImageQueue = DynamicBatcher[torch.Tensor, np.ndarray]
TextQueue = DynamicBatcher[torch.Tensor, np.ndarray]


@dataclass
class EncoderQueues:
    images: ImageQueue
    texts: TextQueue
    decoded: FairSlots  # one slot per decoded image, held until its batch has run

    @classmethod
    def create(
        cls,
        runtime: ClipRuntime,
        settings: Settings,
        compute: Executor,
        observer: BatchObserver | None,
        background: BackgroundLane | None = None,
    ) -> EncoderQueues:
        """One queue per tower. `compute` should be single-threaded: the model already uses every core.
        `background`: the lane on which Batch API work runs, pausing at the model's yield points for online work
        (runtime/foreground_gate.py); None: it runs on `compute`, whole."""

        def encode_images(pixels: list[torch.Tensor]) -> list[np.ndarray]:
            return list(runtime.encode_images(torch.stack(pixels)))

        def encode_texts(ids: list[torch.Tensor]) -> list[np.ndarray]:
            return list(runtime.encode_texts(torch.stack(ids)))

        wait_s = settings.batch_wait_ms / 1000.0
        target_s = settings.batch_latency_target_ms / 1000.0 or None
        contended_s = settings.contended_batch_latency_target_ms / 1000.0 or None
        activity = TenantActivity(settings.contention_window_s)
        queue_size = settings.max_queue_items
        images: ImageQueue = DynamicBatcher(
            "images",
            encode_images,
            compute,
            max_batch_size=settings.image_batch_size,
            max_wait_s=wait_s,
            max_batch_s=target_s,
            contended_batch_s=contended_s,
            activity=activity,
            max_queue_size=queue_size,
            max_tenant_items=settings.queue_items_per_account,
            max_queue_bytes=settings.max_queue_bytes,
            max_tenant_bytes=settings.queue_bytes_per_account,
            payload_bytes=_tensor_bytes,
            observer=observer,
            background_idle_s=settings.batch_idle_ms / 1000,
            background=background,
        )
        texts: TextQueue = DynamicBatcher(
            "texts",
            encode_texts,
            compute,
            max_batch_size=settings.text_batch_size,
            max_wait_s=wait_s,
            max_batch_s=target_s,
            contended_batch_s=contended_s,
            activity=activity,
            max_queue_size=queue_size,
            max_tenant_items=settings.queue_items_per_account,
            observer=observer,
            background_idle_s=settings.batch_idle_ms / 1000,
            background=background,
        )
        # Per account half the pool: enough for one account alone to decode a full batch ahead while the model
        # runs the last one, and always room for other accounts, who would otherwise wait for a batch to finish
        # before they could even decode.
        decoded = FairSlots(settings.image_decode_ahead, per_tenant=max(1, settings.image_decode_ahead // 2))
        return cls(images=images, texts=texts, decoded=decoded)

    def start(self) -> None:
        self.images.start()
        self.texts.start()

    async def stop(self) -> None:
        """Drain both queues: everything admitted is answered."""
        await self.images.stop()
        await self.texts.stop()


def _tensor_bytes(pixels: torch.Tensor) -> int:
    return pixels.element_size() * pixels.nelement()

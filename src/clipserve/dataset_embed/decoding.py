"""Bytes -> pixels for one chunk, exactly as the server does it; a bad row fails alone, with its reason.

Rows without bytes are fetched first: URLs through the service's SSRF-safe ImageFetcher under the service's
address policy and limits (one event loop per chunk, at most image_fetch_concurrency fetches at once), paths
through fsspec, never reading more than max_image_bytes + 1 bytes. Then decode_image with the server's caps
and draft setting, and the runtime's open_clip eval transform.
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch
from fsspec.core import url_to_fs
from PIL import Image

from clipserve.config import Settings
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import PreparedChunk, RawChunk
from clipserve.dataset_embed.sources import read_capped
from clipserve.errors import ClipserveError, ImageFetchError, ImageTooLargeError
from clipserve.runtime.fetch import ImageFetcher, is_remote_source
from clipserve.runtime.images import decode_image

# The server's JPEG draft floor (api/app.py JPEG_DRAFT_MIN_SIDE), repeated here so a decode task does not import
# the web app; tests/unit/test_dataset_decoding.py checks the two are equal.
JPEG_DRAFT_MIN_SIDE = 448
FETCH_ACCOUNT = "embed-dataset"  # the one "account" the fetcher's fair slots see: image_fetch_concurrency

Transform = Callable[[Image.Image], torch.Tensor]


def prepare_chunk(raw: RawChunk, job: EmbedJob, transform: Transform) -> PreparedChunk:
    """Fetch what is missing, decode and transform every row; pixels of the rows that decoded, in row order."""
    settings = job.settings
    data = list(raw.data)
    errors = list(raw.errors)
    urls = [
        i for i, d in enumerate(data) if d is None and errors[i] is None and is_remote_source(raw.sources[i])
    ]
    if urls:
        fetched = asyncio.run(_fetch_all([raw.sources[i] for i in urls], settings))
        for i, result in zip(urls, fetched, strict=True):
            if isinstance(result, bytes):
                data[i] = result
            else:
                errors[i] = result
    for i, source in enumerate(raw.sources):
        if data[i] is None and errors[i] is None:
            try:
                data[i] = _read_path(raw.base, source, settings.max_image_bytes)
            except ClipserveError as exc:
                errors[i] = exc.message
            except OSError as exc:
                errors[i] = f"could not read the image: {exc}"
    pixels: list[torch.Tensor] = []
    for i, payload in enumerate(data):
        if payload is None or errors[i] is not None:
            continue
        try:
            pixels.append(_decode(payload, settings, transform))
        except ClipserveError as exc:
            errors[i] = exc.message
        except OSError as exc:
            errors[i] = f"could not decode the image: {exc}"
    return PreparedChunk(
        raw=replace(raw, data=[None] * len(raw.data)),
        pixels=_stack(pixels, transform),
        errors=errors,
    )


def _decode(data: bytes, settings: Settings, transform: Transform) -> torch.Tensor:
    if len(data) > settings.max_image_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes; the limit is {settings.max_image_bytes}")
    image = decode_image(
        data,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_image_aspect_ratio,
        draft_min_side=JPEG_DRAFT_MIN_SIDE if settings.jpeg_draft else None,
    )
    return transform(image)


def _stack(pixels: list[torch.Tensor], transform: Transform) -> np.ndarray:
    if pixels:
        return torch.stack(pixels).numpy().astype(np.float32, copy=False)
    # No row decoded: an empty batch of the transform's own output shape.
    shape = tuple(transform(Image.new("RGB", (1, 1))).shape)
    return np.empty((0, *shape), dtype=np.float32)


def _read_path(base: str, source: str, cap: int) -> bytes:
    """A table row's image path: relative to `base` (the table's folder), absolute, or a URL on its filesystem.

    Other fsspec URLs are refused: each protocol (ftp, smb, a `simplecache::http://` chain ...) is its own
    network client outside the image fetch policy, and a URL list is often data from the internet.
    """
    base_fs, base_path = url_to_fs(base or ".")
    protocols = base_fs.protocol if isinstance(base_fs.protocol, tuple) else (base_fs.protocol,)
    allowed = f"a row names an http(s) URL, a path, or a URL on the table's own filesystem ({protocols[0]})"
    if "::" in source.split("/", 1)[0]:
        raise ImageFetchError(f"image {source!r} is a chained fsspec URL: {allowed}")
    if "://" in source:
        scheme = source.split("://", 1)[0].lower()
        if scheme not in protocols:
            raise ImageFetchError(f"image URL scheme {scheme!r} is not read here: {allowed}")
        fs, path = url_to_fs(source)
    elif posixpath.isabs(source):
        fs, path = base_fs, source
    else:
        fs, path = base_fs, base_path.rstrip("/") + "/" + source
    return read_capped(fs, path, cap)


async def _fetch_all(urls: list[str], settings: Settings) -> list[bytes | str]:
    """Each URL's bytes, or the reason it could not be fetched; at most image_fetch_concurrency at once."""
    fetcher = ImageFetcher.from_settings(settings)
    await fetcher.start()
    try:

        async def one(url: str) -> bytes | str:
            try:
                async with fetcher.connection(FETCH_ACCOUNT):
                    return await fetcher.fetch(url)
            except ClipserveError as exc:
                return exc.message
            except OSError as exc:
                return f"could not fetch the image: {type(exc).__name__}: {exc.strerror or exc}"

        return list(await asyncio.gather(*(one(url) for url in urls)))
    finally:
        await fetcher.close()

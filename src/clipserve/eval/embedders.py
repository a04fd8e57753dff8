"""Where evaluation gets its embeddings: the local runtime (batched, parallel decode) or a running server."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

import httpx
import numpy as np
import torch
from tqdm import tqdm

from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime

T = TypeVar("T")


class Embedder(Protocol):
    def embed_images(self, paths: Sequence[Path]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


def _batches(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class RemoteEmbeddingError(RuntimeError):
    """The server answered with an error, or could not be reached."""


def _in_batches(
    items: Sequence[T], size: int, what: str, encode: Callable[[Sequence[T]], np.ndarray]
) -> np.ndarray:
    """encode() over consecutive batches, with a progress bar on stderr."""
    out = []
    with tqdm(total=len(items), desc=what, unit=what.split()[-1], dynamic_ncols=True, leave=False) as bar:
        for batch in _batches(items, size):
            out.append(encode(batch))
            bar.update(len(batch))
    return np.concatenate(out)


class LocalEmbedder:
    """The server's runtime in-process: decode on a thread pool while the model encodes the previous batch."""

    def __init__(self, runtime: ClipRuntime, batch_size: int, decode_workers: int, max_pixels: int) -> None:
        self._runtime = runtime
        self._batch_size = batch_size
        self._pool = ThreadPoolExecutor(decode_workers, thread_name_prefix="eval-decode")
        self._max_pixels = max_pixels

    def _pixels(self, path: Path) -> torch.Tensor:
        return self._runtime.preprocess(decode_image(path.read_bytes(), max_pixels=self._max_pixels))

    def embed_images(self, paths: Sequence[Path]) -> np.ndarray:
        pending = [self._pool.submit(self._pixels, p) for p in paths]  # decoding runs ahead of the model
        return _in_batches(
            pending,
            self._batch_size,
            "encoding images",
            lambda batch: self._runtime.encode_images(torch.stack([f.result() for f in batch])),
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _in_batches(
            texts,
            self._batch_size,
            "encoding texts",
            lambda batch: self._runtime.encode_texts(self._runtime.tokenize(list(batch)).ids),
        )


class RemoteEmbedder:
    """A running clipserve (or any OpenAI-compatible CLIP server) through /v1/embeddings."""

    def __init__(self, url: str, api_key: str | None, batch_size: int, timeout_s: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._batch_size = batch_size

    def _embed(self, items: list[object]) -> np.ndarray:
        try:
            response = self._client.post("/v1/embeddings", json={"input": items, "encoding_format": "base64"})
        except httpx.HTTPError as exc:
            raise RemoteEmbeddingError(f"could not reach {self._client.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise RemoteEmbeddingError(
                f"{response.status_code} from {self._client.base_url}: {response.text[:300]}"
            )
        rows = sorted(response.json()["data"], key=lambda d: d["index"])
        return np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows])

    def embed_images(self, paths: Sequence[Path]) -> np.ndarray:
        return _in_batches(
            paths,
            self._batch_size,
            "encoding images",
            lambda batch: self._embed([{"image": base64.b64encode(p.read_bytes()).decode()} for p in batch]),
        )

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return _in_batches(texts, self._batch_size, "encoding texts", lambda batch: self._embed(list(batch)))

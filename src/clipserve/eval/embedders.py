"""Where evaluation gets its embeddings: the local runtime (batched, parallel decode) or a running server."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
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


def _progress(total: int, what: str) -> tqdm:
    return tqdm(total=total, desc=what, unit=what.split()[-1], dynamic_ncols=True, leave=False)


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
        out = []
        with _progress(len(paths), "encoding images") as bar:
            pending = [self._pool.submit(self._pixels, p) for p in paths]  # decode runs ahead of the model
            for batch in _batches(pending, self._batch_size):
                out.append(self._runtime.encode_images(torch.stack([f.result() for f in batch])))
                bar.update(len(batch))
        return np.concatenate(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        with _progress(len(texts), "encoding texts") as bar:
            for batch in _batches(texts, self._batch_size):
                out.append(self._runtime.encode_texts(self._runtime.tokenize(list(batch)).ids))
                bar.update(len(batch))
        return np.concatenate(out)


class RemoteEmbedder:
    """A running clipserve (or any OpenAI-compatible CLIP server) through /v1/embeddings."""

    def __init__(self, url: str, api_key: str | None, batch_size: int, timeout_s: float = 300.0) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._batch_size = batch_size

    def _embed(self, items: list[object]) -> np.ndarray:
        response = self._client.post("/v1/embeddings", json={"input": items, "encoding_format": "base64"})
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code} from {self._client.base_url}: {response.text[:300]}")
        rows = sorted(response.json()["data"], key=lambda d: d["index"])
        return np.stack([np.frombuffer(base64.b64decode(r["embedding"]), dtype="<f4") for r in rows])

    def embed_images(self, paths: Sequence[Path]) -> np.ndarray:
        out = []
        with _progress(len(paths), "encoding images") as bar:
            for batch in _batches(paths, self._batch_size):
                items: list[object] = [{"image": base64.b64encode(p.read_bytes()).decode()} for p in batch]
                out.append(self._embed(items))
                bar.update(len(batch))
        return np.concatenate(out)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        with _progress(len(texts), "encoding texts") as bar:
            for batch in _batches(texts, self._batch_size):
                out.append(self._embed(list(batch)))
                bar.update(len(batch))
        return np.concatenate(out)

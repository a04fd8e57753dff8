"""embed-dataset decoding (issue 14): a chunk's bytes become the server's pixels; a bad row fails alone.

The expected pixels are the server's own path: clipserve.runtime.images.decode_image with the app's caps and
JPEG draft floor, then the runtime's open_clip eval transform. URL rows go through the service's ImageFetcher
and its SSRF policy, against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from clipserve.api.app import JPEG_DRAFT_MIN_SIDE as SERVER_DRAFT_MIN_SIDE
from clipserve.config import Settings
from clipserve.dataset_embed import decoding
from clipserve.dataset_embed.decoding import prepare_chunk
from clipserve.dataset_embed.job import EmbedJob
from clipserve.dataset_embed.records import RawChunk
from clipserve.dataset_embed.sources import discover_shards, read_chunks
from clipserve.runtime.images import decode_image
from clipserve.runtime.model import ClipRuntime
from tests.support import encode_image, gradient_image, make_settings, photo_path


def job_for(tmp_path: Path, **settings: Any) -> EmbedJob:
    return EmbedJob(
        settings=make_settings(tmp_path, **settings), input=str(tmp_path), output=tmp_path / "out"
    )


def raw_chunk(
    sources: list[str], data: list[bytes | None], errors: list[str | None] | None = None, base: str = ""
) -> RawChunk:
    n = len(sources)
    return RawChunk(
        shard=0,
        chunk=0,
        last=True,
        base=base,
        keys=[f"k{i}" for i in range(n)],
        sources=sources,
        captions=[None] * n,
        extras=[{} for _ in range(n)],
        data=data,
        errors=errors if errors is not None else [None] * n,
    )


def server_pixels(runtime: ClipRuntime, data: bytes, settings: Settings) -> np.ndarray:
    """What the server feeds the model for these bytes (api/app.py's ImageLimits, EmbeddingService._decode_bytes)."""
    image = decode_image(
        data,
        max_pixels=settings.max_image_pixels,
        max_aspect_ratio=settings.max_image_aspect_ratio,
        draft_min_side=SERVER_DRAFT_MIN_SIDE if settings.jpeg_draft else None,
    )
    return runtime.preprocess(image).numpy()


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A JPEG whose short side is over 2 x 448 px, so the server decodes it in draft mode."""
    return encode_image(gradient_image(1400, 1000, seed=3), "JPEG", quality=90)


def test_the_draft_floor_is_the_servers() -> None:
    assert decoding.JPEG_DRAFT_MIN_SIDE == SERVER_DRAFT_MIN_SIDE


@pytest.mark.parametrize("jpeg_draft", [True, False])
def test_pixels_equal_the_servers_decode_and_transform(
    tmp_path: Path, tiny_runtime: ClipRuntime, big_jpeg: bytes, jpeg_draft: bool
) -> None:
    job = job_for(tmp_path, jpeg_draft=jpeg_draft)
    images = [
        photo_path("rocket").read_bytes(),  # JPEG
        photo_path("astronaut").read_bytes(),  # PNG
        photo_path("camera").read_bytes(),  # grayscale
        photo_path("horse").read_bytes(),  # RGBA
        encode_image(gradient_image(90, 60, seed=1), "WEBP"),
        big_jpeg,
    ]
    prepared = prepare_chunk(
        raw_chunk([f"{i}" for i in range(len(images))], list(images)), job, tiny_runtime.image_transform
    )
    assert prepared.errors == [None] * len(images)
    assert prepared.pixels.dtype == np.float32
    expected = np.stack([server_pixels(tiny_runtime, data, job.settings) for data in images])
    np.testing.assert_array_equal(prepared.pixels, expected)
    assert prepared.raw.data == [None] * len(images)


def test_a_large_jpeg_is_decoded_in_draft_mode_only_when_the_setting_is_on(
    tmp_path: Path, tiny_runtime: ClipRuntime, big_jpeg: bytes
) -> None:
    drafted = prepare_chunk(
        raw_chunk(["a"], [big_jpeg]), job_for(tmp_path), tiny_runtime.image_transform
    ).pixels
    full = prepare_chunk(
        raw_chunk(["a"], [big_jpeg]), job_for(tmp_path, jpeg_draft=False), tiny_runtime.image_transform
    )
    assert not np.array_equal(drafted, full.pixels)  # the draft path really ran: its pixels differ


def test_bad_rows_fail_with_their_reason_while_the_others_decode(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    job = job_for(tmp_path, max_image_pixels=100_000, max_image_aspect_ratio=4.0)
    good_png = encode_image(gradient_image(64, 48, seed=1))
    good_jpeg = encode_image(gradient_image(80, 80, seed=2), "JPEG")
    truncated = encode_image(gradient_image(200, 200, seed=3), "JPEG")[:400]
    huge = encode_image(Image.new("RGB", (400, 400)))
    wide = encode_image(gradient_image(100, 10, seed=4))
    unsupported = encode_image(gradient_image(8, 8), "PPM")
    data: list[bytes | None] = [
        good_png,
        b"not an image at all",
        truncated,
        huge,
        None,
        wide,
        unsupported,
        good_jpeg,
    ]
    read_errors: list[str | None] = [
        None,
        None,
        None,
        None,
        "image is over the 4096-byte limit",
        None,
        None,
        None,
    ]
    prepared = prepare_chunk(
        raw_chunk([f"{i}" for i in range(8)], data, read_errors), job, tiny_runtime.image_transform
    )
    not_an_image = "could not decode the image: not a PNG, JPEG, WebP, GIF, BMP or TIFF file"
    assert prepared.errors[:2] == [None, not_an_image]
    assert prepared.errors[2] is not None
    assert prepared.errors[2].startswith("could not decode the image: ")
    assert prepared.errors[3:] == [
        "image is 400x400 = 160000 pixels; the limit is 100000",
        "image is over the 4096-byte limit",  # failed while reading: kept as it was
        "image is 100x10, an aspect ratio of 10:1; the limit is 4:1 (the model sees only the centre square: "
        "crop or pad the image)",
        not_an_image,
        None,
    ]
    expected = np.stack([server_pixels(tiny_runtime, d, job.settings) for d in (good_png, good_jpeg)])
    np.testing.assert_array_equal(prepared.pixels, expected)


def test_a_chunk_where_nothing_decodes_has_no_pixels_of_the_transforms_shape(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    prepared = prepare_chunk(
        raw_chunk(["a", "b"], [b"junk", None], [None, "gone"]),
        job_for(tmp_path),
        tiny_runtime.image_transform,
    )
    assert prepared.pixels.shape == (0, 3, 224, 224)
    assert prepared.pixels.dtype == np.float32
    assert prepared.errors[1] == "gone"


def test_an_image_over_the_byte_cap_is_refused_before_decoding(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    data = encode_image(gradient_image(64, 64, seed=0))
    assert len(data) > 4096
    prepared = prepare_chunk(
        raw_chunk(["a"], [data]), job_for(tmp_path, max_image_bytes=4096), tiny_runtime.image_transform
    )
    assert prepared.errors == [f"image is {len(data)} bytes; the limit is 4096"]


# --- paths -------------------------------------------------------------------------------------------------


def test_paths_are_read_relative_to_the_base_absolute_or_as_file_urls(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    images = [encode_image(gradient_image(40, 30, seed=s)) for s in range(3)]
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "rel.png").write_bytes(images[0])
    (tmp_path / "abs.png").write_bytes(images[1])
    (tmp_path / "url.png").write_bytes(images[2])
    os.symlink("/dev/zero", tmp_path / "endless.png")
    sources = [
        "imgs/rel.png",
        str(tmp_path / "abs.png"),
        f"file://{tmp_path}/url.png",
        "imgs/missing.png",
        "endless.png",
    ]
    job = job_for(tmp_path, max_image_bytes=64 * 1024)
    prepared = prepare_chunk(
        raw_chunk(sources, [None] * 5, base=str(tmp_path)), job, tiny_runtime.image_transform
    )
    missing = f"could not read the image: [Errno 2] No such file or directory: '{tmp_path}/imgs/missing.png'"
    assert prepared.errors == [None, None, None, missing, "image is over the 65536-byte limit"]
    expected = np.stack([server_pixels(tiny_runtime, d, job.settings) for d in images])
    np.testing.assert_array_equal(prepared.pixels, expected)


def test_a_tables_chunks_decode_from_paths_relative_to_its_folder(
    tmp_path: Path, tiny_runtime: ClipRuntime
) -> None:
    images = [encode_image(gradient_image(30, 30, seed=s)) for s in range(3)]
    folder = tmp_path / "tables"
    (folder / "imgs").mkdir(parents=True)
    for i, data in enumerate(images):
        (folder / "imgs" / f"{i}.png").write_bytes(data)
    paths = ["imgs/0.png", str(folder / "imgs" / "1.png"), "imgs/2.png"]
    pq.write_table(pa.table({"image_path": paths}), folder / "list.parquet")
    table = str(folder / "list.parquet")
    job = EmbedJob(settings=make_settings(tmp_path), input=table, output=tmp_path / "out", chunk_size=2)
    (shard,) = discover_shards(job)
    assert shard.kind == "table"
    prepared = [prepare_chunk(raw, job, tiny_runtime.image_transform) for raw in read_chunks(shard, job)]
    assert [p.errors for p in prepared] == [[None, None], [None]]
    expected = np.stack([server_pixels(tiny_runtime, d, job.settings) for d in images])
    np.testing.assert_array_equal(np.concatenate([p.pixels for p in prepared]), expected)


# --- URLs --------------------------------------------------------------------------------------------------


class _Images(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    files = {f"/{i}.png": encode_image(gradient_image(50, 40, seed=i)) for i in range(3)}
    handler = type("Handler", (_Images,), {"files": files})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_urls_to_loopback_are_refused_by_the_services_ssrf_policy(
    tmp_path: Path, tiny_runtime: ClipRuntime, image_server: tuple[str, dict[str, bytes]]
) -> None:
    base, _ = image_server
    raw = raw_chunk([f"{base}/0.png", "local.png"], [None, encode_image(gradient_image(20, 20))])
    prepared = prepare_chunk(raw, job_for(tmp_path), tiny_runtime.image_transform)
    assert prepared.errors == [f"image URL {base}/0.png is not allowed: non-public address", None]
    assert prepared.pixels.shape[0] == 1


@pytest.mark.parametrize(
    "policy", [{"image_fetch_allow_private": True}, {"image_fetch_allowed_networks": ["127.0.0.0/8"]}]
)
def test_urls_are_fetched_and_decoded_when_the_policy_allows_the_host(
    tmp_path: Path,
    tiny_runtime: ClipRuntime,
    image_server: tuple[str, dict[str, bytes]],
    policy: dict[str, Any],
) -> None:
    base, files = image_server
    sources = [f"{base}/0.png", f"{base}/missing.png", f"{base}/1.png", f"{base}/2.png"]
    job = job_for(tmp_path, **policy)
    prepared = prepare_chunk(raw_chunk(sources, [None] * 4), job, tiny_runtime.image_transform)
    assert prepared.errors == [None, f"fetching {base}/missing.png returned HTTP 404", None, None]
    expected = np.stack([server_pixels(tiny_runtime, files[f"/{i}.png"], job.settings) for i in range(3)])
    np.testing.assert_array_equal(prepared.pixels, expected)


def test_a_fetched_image_over_the_byte_cap_fails_its_row(
    tmp_path: Path, tiny_runtime: ClipRuntime, image_server: tuple[str, dict[str, bytes]]
) -> None:
    base, files = image_server
    size = len(files["/0.png"])
    assert size > 1024
    job = job_for(tmp_path, image_fetch_allow_private=True, max_image_bytes=1024)
    prepared = prepare_chunk(raw_chunk([f"{base}/0.png"], [None]), job, tiny_runtime.image_transform)
    assert prepared.errors == [f"image is {size} bytes; the limit is 1024"]

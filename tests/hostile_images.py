"""A standing corpus of hostile images: each one must get a clear 4xx (or a correct embedding), never a 500 or a hang.

Each case is (name, bytes, expected): `expected` is the error code the service must answer with, or None when
the image must embed (then its pixels must equal open_clip's eval transform applied to what Pillow reads).
Shared by tests/unit/test_hostile_images.py (decode + preprocess) and tests/api (POST /v1/embeddings).
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tests.support import encode_image, gradient_image

TOO_LARGE = "image_too_large"
INVALID = "invalid_image"
ASPECT = "image_aspect_ratio"
DEFAULT_ASPECT_CAP = 20.0


@dataclass(frozen=True)
class HostileImage:
    name: str
    data: bytes
    expected: str | None  # an error code, or None: must embed
    # Some truncated files still decode (Pillow fills nothing in; a GIF's first frame may be complete):
    # either a clear 400 invalid_image or an embedding is correct for them.
    may_embed: bool = False


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int, *, color_type: int = 2) -> bytes:
    """A PNG of ~70 bytes that declares a `width` x `height` canvas."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def png_solid(width: int, height: int, mode: str = "RGB") -> bytes:
    """A real, complete PNG (a flat colour compresses ~1000:1: the shape of a decompression bomb)."""
    return encode_image(
        Image.new(mode, (width, height), 90 if mode in ("L", "P", "1") else (90, 30, 200)), "PNG"
    )


def gif_header_only(width: int, height: int) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2 entries
    palette = b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    lzw = b"\x02\x02\x4c\x01\x00"  # min code size 2, one sub-block, terminator
    return b"GIF89a" + screen + palette + descriptor + lzw + b"\x3b"


def gif_frame_larger_than_screen() -> bytes:
    """A 1x1 logical screen whose only frame declares 30000x30000."""
    screen = struct.pack("<HHBBB", 1, 1, 0x80, 0, 0)
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, 30_000, 30_000, 0)
    return b"GIF89a" + screen + b"\x00\x00\x00\xff\xff\xff" + descriptor + b"\x02\x02\x4c\x01\x00\x3b"


def bmp_header_only(width: int, height: int) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    pixels = b"\0" * 64
    header = b"BM" + struct.pack("<IHHI", 14 + len(info) + len(pixels), 0, 0, 14 + len(info))
    return header + info + pixels


def tiff_header_only(width: int, height: int) -> bytes:
    """A little-endian baseline TIFF (8-bit gray, one uncompressed strip) declaring `width` x `height`."""
    entries = [
        (256, 4, 1, width),  # ImageWidth (LONG)
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8),  # StripOffsets: the 64 bytes after the header
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 64),  # StripByteCounts
    ]
    ifd_offset = 8 + 64
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<HI", value, 0)[:4] if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", ifd_offset) + b"\0" * 64 + ifd


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF header is patched to declare `width` x `height`."""
    data = bytearray(encode_image(gradient_image(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def webp_declaring(width: int, height: int) -> bytes:
    """A VP8X (extended) WebP whose canvas is `width` x `height`, around a 16x16 lossless frame."""
    frame = encode_image(gradient_image(16, 16), "WEBP", lossless=True)[12:]  # the VP8L chunk
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\0\0\0\0" + (width - 1).to_bytes(3, "little")
    vp8x += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + vp8x + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _zeros_deflated(size: int) -> bytes:
    compressor = zlib.compressobj(1)
    block = bytes(1 << 20)
    whole, rest = divmod(size, 1 << 20)
    return (
        b"".join(compressor.compress(block) for _ in range(whole))
        + compressor.compress(bytes(rest))
        + (compressor.flush())
    )


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 8-bit gray PNG of zeros: ~1000x smaller than its pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = _zeros_deflated((width + 1) * height)  # a filter byte, then the row
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_text_bomb() -> bytes:
    """A 16x16 PNG with a zTXt chunk that inflates to 16 MB (Pillow refuses text chunks over 1 MB)."""
    payload = b"Comment\0\0" + _zeros_deflated(16 << 20)
    base = encode_image(gradient_image(16, 16), "PNG")
    return base[:33] + _chunk(b"zTXt", payload) + base[33:]


def png_iccp_bomb() -> bytes:
    """A 16x16 PNG whose ICC profile chunk inflates to 16 MB."""
    payload = b"icc\0\0" + _zeros_deflated(16 << 20)
    base = encode_image(gradient_image(16, 16), "PNG")
    return base[:33] + _chunk(b"iCCP", payload) + base[33:]


def _gif_pixels(index: int, count: int) -> bytes:
    """LZW data (min code size 2) for `count` pixels of palette `index`: a clear code before each, so all
    codes stay 3 bits wide."""
    codes = [code for _ in range(count) for code in (4, index)] + [5]
    bits = sum(code << (3 * i) for i, code in enumerate(codes))
    packed = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    return b"\x02" + bytes([len(packed)]) + packed + b"\x00"


def animated_gif(frames: int) -> bytes:
    """A 2x2 animated GIF of `frames` frames, written by hand (fast at any count): the first red, then blue."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0x80, 0, 0) + b"\xff\x00\x00\x00\x00\xff"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"

    def frame(index: int) -> bytes:
        control = b"\x21\xf9\x04\x00\x01\x00\x00\x00"  # 10 ms
        return control + b"\x2c" + struct.pack("<HHHHB", 0, 0, 2, 2, 0) + _gif_pixels(index, 4)

    return screen + loop + frame(0) + frame(1) * (frames - 1) + b"\x3b"


def with_exif_orientation(value: Any, fmt: str = "JPEG") -> bytes:
    source = gradient_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = value
    return encode_image(source, fmt, exif=exif)


def jpeg_with_broken_exif() -> bytes:
    """A JPEG whose APP1 Exif segment holds an IFD that points past its end and loops on itself."""
    base = encode_image(gradient_image(32, 32), "JPEG")
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 2)
    tiff += struct.pack("<HHII", 0x0112, 3, 1, 0xFFFF)  # orientation out of range
    tiff += struct.pack("<HHII", 0x8769, 4, 1, 8)  # Exif IFD pointing back at IFD0
    tiff += struct.pack("<I", 8)  # next IFD: itself
    app1 = b"Exif\0\0" + tiff
    return base[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + base[2:]


def odd_mode(mode: str, fmt: str) -> bytes:
    rgb = gradient_image(48, 32)
    if mode in ("I;16", "I;16B"):
        ramp = np.linspace(0, 65535, 48 * 32).reshape(32, 48).astype(np.uint16)
        image = Image.fromarray(ramp).convert(mode) if mode != "I;16" else Image.fromarray(ramp)
    elif mode == "I":
        image = Image.fromarray(np.linspace(-1e6, 1e9, 48 * 32).reshape(32, 48).astype(np.int32))
    elif mode == "F":
        values = np.linspace(-3.0, 7.0, 48 * 32).reshape(32, 48).astype(np.float32)
        image = Image.fromarray(values)
    elif mode == "F-nonfinite":
        values = np.linspace(-3.0, 7.0, 48 * 32).reshape(32, 48).astype(np.float32)
        values[0, :5] = [np.nan, np.inf, -np.inf, np.nan, np.inf]
        image = Image.fromarray(values)
    elif mode == "F-all-nan":
        image = Image.fromarray(np.full((32, 48), np.nan, dtype=np.float32))
    elif mode == "P-transparent":
        image = rgb.convert("P")
        return encode_image(image, fmt, transparency=3)
    elif mode == "PA":
        image = rgb.convert("P").convert("PA")
    else:
        image = rgb.convert(mode)
    return encode_image(image, fmt)


def _truncations(name: str, data: bytes) -> list[HostileImage]:
    cuts = {"header": min(len(data) - 1, 24), "half": len(data) // 2, "last-byte": len(data) - 1}
    return [
        HostileImage(f"truncated-{name}-{cut}", data[:n], INVALID, may_embed=True) for cut, n in cuts.items()
    ]


@functools.cache
def hostile_images() -> tuple[HostileImage, ...]:
    """Every case, built once per test session."""
    cases = [
        # Thin: the reference resizes the short side to 224 before cropping.
        HostileImage("thin-3000x1", png_solid(3000, 1), ASPECT),
        HostileImage("thin-1x3000", png_solid(1, 3000), ASPECT),
        HostileImage("thin-21x1", png_solid(21, 1), ASPECT),
        HostileImage("thin-1x21", png_solid(1, 21), ASPECT),
        HostileImage("thin-100000x1-header", png_header_only(100_000, 1), ASPECT),
        HostileImage("thin-1x100000-header", png_header_only(1, 100_000), ASPECT),
        HostileImage("thin-40000x1000-header", png_header_only(40_000, 1000), ASPECT),
        HostileImage("thin-gif-60000x1-header", gif_header_only(60_000, 1), ASPECT),
        HostileImage("thin-20x1", png_solid(20, 1), None),
        HostileImage("thin-1x20", png_solid(1, 20), None),
        HostileImage("tiny-1x1", png_solid(1, 1), None),
        HostileImage("tiny-7x3", encode_image(gradient_image(7, 3), "PNG"), None),
        # Huge declared size, tiny file.
        HostileImage("declared-png-100000x100000", png_header_only(100_000, 100_000), TOO_LARGE),
        HostileImage("declared-gif-65535x65535", gif_header_only(65_535, 65_535), TOO_LARGE),
        HostileImage("declared-bmp-100000x100000", bmp_header_only(100_000, 100_000), TOO_LARGE),
        HostileImage("declared-tiff-100000x100000", tiff_header_only(100_000, 100_000), TOO_LARGE),
        HostileImage("declared-jpeg-65500x65500", jpeg_declaring(65_500, 65_500), TOO_LARGE),
        HostileImage("declared-webp-16383x16383", webp_declaring(16_383, 16_383), TOO_LARGE),
        HostileImage("declared-png-2^31x2^31", png_header_only(2**31 - 1, 2**31 - 1), TOO_LARGE),
        HostileImage("gif-frame-larger-than-screen", gif_frame_larger_than_screen(), TOO_LARGE),
        # Decompression bombs: small files that inflate far past the pixel cap, or into metadata.
        HostileImage("bomb-png-6400x6400", png_bomb(6400, 6400), TOO_LARGE),
        HostileImage("bomb-png-ztxt-16MB", png_text_bomb(), INVALID, may_embed=True),
        HostileImage("bomb-png-iccp-16MB", png_iccp_bomb(), INVALID, may_embed=True),
        # Odd modes: each becomes what the reference transform handles.
        *[
            HostileImage(f"mode-{mode}-{fmt}", odd_mode(mode, fmt), None)
            for mode, fmt in [
                ("I;16", "PNG"),
                ("I;16", "TIFF"),
                ("I;16B", "TIFF"),
                ("I", "TIFF"),
                ("F", "TIFF"),
                ("F-nonfinite", "TIFF"),
                ("F-all-nan", "TIFF"),
                ("CMYK", "JPEG"),
                ("CMYK", "TIFF"),
                ("P-transparent", "PNG"),
                ("P-transparent", "GIF"),
                ("1", "PNG"),
                ("1", "BMP"),
                ("1", "TIFF"),
                ("LA", "PNG"),
                ("LA", "TIFF"),
                ("RGBA", "WEBP"),
                ("RGBA", "TIFF"),
                ("YCbCr", "TIFF"),
                ("LAB", "TIFF"),
                ("L", "GIF"),
                ("P", "BMP"),
            ]
        ],
        # Not images.
        HostileImage("zero-bytes", b"", INVALID),
        HostileImage("text", b"hello, this is not an image", INVALID),
        HostileImage("html", b"<!doctype html><html><body><img src=x></body></html>", INVALID),
        HostileImage("pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF", INVALID),
        HostileImage("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>', INVALID),
        HostileImage("ico", encode_image(gradient_image(32, 32), "ICO"), INVALID),
        HostileImage("random-bytes", np.random.default_rng(0).bytes(4096), INVALID),
        HostileImage("png-signature-only", b"\x89PNG\r\n\x1a\n", INVALID),
        HostileImage("png-zero-size", png_header_only(0, 0), INVALID),
        HostileImage("bmp-zero-width", bmp_header_only(0, 10), INVALID),
        # Many frames: only the first is decoded.
        HostileImage("gif-100000-frames", animated_gif(100_000), None),
        # EXIF orientation: every legal value, and the illegal ones.
        *[HostileImage(f"exif-orientation-{v}", with_exif_orientation(v), None) for v in range(0, 10)],
        HostileImage("exif-orientation-65535", with_exif_orientation(65535), None),
        HostileImage("exif-orientation-png-6", with_exif_orientation(6, "PNG"), None),
        HostileImage("exif-orientation-webp-8", with_exif_orientation(8, "WEBP"), None),
        HostileImage("exif-orientation-tiff-5", with_exif_orientation(5, "TIFF"), None),
        HostileImage("exif-broken-ifd-loop", jpeg_with_broken_exif(), None),
    ]
    for fmt, args in [("PNG", {}), ("JPEG", {}), ("GIF", {}), ("BMP", {}), ("TIFF", {}), ("WEBP", {})]:
        whole = encode_image(gradient_image(64, 48), fmt, **args)
        cases += _truncations(fmt.lower(), whole)
    return tuple(cases)


def pil_reference_input(data: bytes) -> Image.Image:
    """What a plain open_clip user would hand the transform for the same bytes (Pillow's own reading)."""
    return Image.open(io.BytesIO(data))

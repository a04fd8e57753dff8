from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from clipserve.errors import ImageAspectRatioError, ImageTooLargeError, InvalidImageError, InvalidRequestError
from clipserve.runtime.images import decode_image
from tests.support import encode_image, gradient_image

MAX_PIXELS = 40_000_000


def decode(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    return decode_image(data, max_pixels=max_pixels)


@pytest.mark.parametrize(("fmt", "args"), [("PNG", {}), ("JPEG", {"quality": 95}), ("WEBP", {}), ("BMP", {}),
                                           ("TIFF", {}), ("GIF", {})])  # fmt: skip
def test_every_supported_format_decodes(fmt: str, args: dict[str, object]) -> None:
    image = decode(encode_image(gradient_image(64, 48), fmt, **args))
    assert image.size == (64, 48)
    assert image.mode in ("RGB", "RGBA")


@pytest.mark.parametrize(
    ("mode", "expected"),
    [("L", "L"), ("LA", "LA"), ("RGBA", "RGBA"), ("RGB", "RGB"), ("1", "L"), ("P", "RGB"), ("CMYK", "RGB")],
)
def test_modes_become_what_the_reference_transform_handles(mode: str, expected: str) -> None:
    source = gradient_image(32, 32).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG" if mode != "CMYK" else "TIFF"
    decoded = decode(encode_image(source, fmt))
    assert decoded.mode == expected
    assert decoded.convert("RGB").size == (32, 32)


def test_palette_with_transparency_keeps_alpha() -> None:
    source = Image.new("P", (8, 8), 0)
    source.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    source.info["transparency"] = 1
    decoded = decode(encode_image(source, "PNG", transparency=1))
    assert decoded.mode == "RGBA"


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    decoded = decode(encode_image(Image.fromarray(ramp), "PNG"))
    pixels = np.asarray(decoded)
    assert decoded.mode == "L"
    assert pixels.min() == 0
    assert pixels.max() == 255
    # Pillow's plain convert would saturate everything above 255; the scaled ramp stays a ramp.
    assert 120 < pixels.mean() < 135


def test_exif_orientation_is_applied() -> None:
    source = Image.new("RGB", (40, 20), (255, 0, 0))
    source.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode(encode_image(source, "JPEG", exif=exif, quality=95))
    assert decoded.size == (20, 40)
    top, bottom = decoded.getpixel((10, 5)), decoded.getpixel((10, 35))
    assert top[0] > 200
    assert top[2] < 60
    assert bottom[2] > 200
    assert bottom[0] < 60


def test_animated_gif_uses_the_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))]
    data = encode_image(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pixel = decode(data).convert("RGB").getpixel((8, 8))
    assert pixel[0] > 200
    assert pixel[2] < 50


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, b"GIF89a" + b"\xff" * 10],
)
def test_garbage_is_an_invalid_image(data: bytes) -> None:
    with pytest.raises(InvalidImageError):
        decode(data)


def test_truncated_jpeg_is_an_invalid_image() -> None:
    data = encode_image(gradient_image(256, 256), "JPEG")
    with pytest.raises(InvalidImageError):
        decode(data[: len(data) // 2])


def test_unsupported_format_is_rejected() -> None:
    with pytest.raises(InvalidImageError):
        decode(encode_image(gradient_image(32, 32), "ICO"))


def _png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that declares a huge canvas: the shape of a decompression bomb."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (
            struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("width", "height"), [(10_000, 10_000), (60_000, 60_000)])
def test_images_over_the_pixel_cap_are_rejected_before_decoding(width: int, height: int) -> None:
    with pytest.raises(ImageTooLargeError):
        decode(_png_header_only(width, height))


def test_pixel_cap_is_configurable() -> None:
    data = encode_image(gradient_image(100, 100), "PNG")
    assert decode(data, max_pixels=10_000).size == (100, 100)
    with pytest.raises(ImageTooLargeError, match="10000 pixels; the limit is 9999"):
        decode(data, max_pixels=9_999)


def test_large_jpegs_decode_at_a_reduced_size_but_never_below_the_floor() -> None:
    big = gradient_image(3000, 2000).resize((3000, 2000))
    data = encode_image(big, "JPEG", quality=90)
    exact = decode(data)
    drafted = decode_image(data, max_pixels=MAX_PIXELS, draft_min_side=448)
    assert exact.size == (3000, 2000)
    assert min(drafted.size) >= 448
    assert drafted.size == (750, 500)  # 1/4 scale: 1/8 would go below 448
    small = encode_image(gradient_image(640, 480), "JPEG")
    assert decode_image(small, max_pixels=MAX_PIXELS, draft_min_side=448).size == (640, 480)
    png = encode_image(gradient_image(2000, 1000), "PNG")
    assert decode_image(png, max_pixels=MAX_PIXELS, draft_min_side=448).size == (2000, 1000)


def solid_png(width: int, height: int) -> bytes:
    return encode_image(Image.new("RGB", (width, height), (10, 200, 30)), "PNG")


@pytest.mark.parametrize(
    "data",
    [solid_png(3000, 1), solid_png(1, 3000), solid_png(21, 1), solid_png(1, 21), solid_png(2001, 100)],
    ids=["3000x1", "1x3000", "21x1", "1x21", "2001x100"],
)
def test_images_beyond_the_aspect_ratio_cap_are_refused(data: bytes) -> None:
    with pytest.raises(ImageAspectRatioError, match="the limit is 20:1") as refused:
        decode_image(data, max_pixels=MAX_PIXELS, max_aspect_ratio=20)
    assert isinstance(refused.value, InvalidRequestError)
    assert (refused.value.status_code, refused.value.code) == (400, "image_aspect_ratio")


@pytest.mark.parametrize(("width", "height"), [(100_000, 1), (1, 100_000), (40_000, 1000)])
def test_aspect_ratio_is_checked_on_the_header_before_decoding(width: int, height: int) -> None:
    # Only the header is valid: decoding would fail as a truncated image, so the cap must come first.
    with pytest.raises(ImageAspectRatioError):
        decode_image(_png_header_only(width, height), max_pixels=MAX_PIXELS, max_aspect_ratio=20)


@pytest.mark.parametrize(("width", "height"), [(20, 1), (1, 20), (2000, 100), (1, 1), (7, 3)])
def test_images_at_or_inside_the_aspect_ratio_cap_decode(width: int, height: int) -> None:
    assert decode_image(solid_png(width, height), max_pixels=MAX_PIXELS, max_aspect_ratio=20).size == (
        width,
        height,
    )


def test_aspect_ratio_cap_is_configurable() -> None:
    assert decode_image(solid_png(10, 2), max_pixels=MAX_PIXELS, max_aspect_ratio=5).size == (10, 2)
    with pytest.raises(ImageAspectRatioError, match=r"5\.5:1; the limit is 5:1"):
        decode_image(solid_png(11, 2), max_pixels=MAX_PIXELS, max_aspect_ratio=5)


def test_float_image_with_non_finite_values_is_stretched_over_its_finite_range() -> None:
    values = np.tile(np.linspace(-3.0, 7.0, 64, dtype=np.float32), (8, 1))
    values[0, :3] = [np.nan, np.inf, -np.inf]
    gray = np.asarray(decode(encode_image(Image.fromarray(values), "TIFF")))
    assert gray.shape == (8, 64)
    assert gray[1:, 0].tolist() == [0] * 7  # -3.0, the finite minimum
    assert gray[1:, -1].tolist() == [255] * 7  # 7.0, the finite maximum
    assert gray[0, :3].tolist() == [0, 255, 0]  # NaN -> low end, +inf -> high end, -inf -> low end
    assert np.all(np.diff(gray[1].astype(int)) >= 0)


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_high_depth_images_larger_than_one_stripe_scale_exactly(mode: str) -> None:
    rng = np.random.default_rng(3)
    shape = (700, 1600)  # 1.1 M pixels: more than one 1 M-pixel stripe
    if mode == "I;16":
        raw = rng.integers(0, 65536, size=shape, dtype=np.uint16)
        expected = np.clip(np.rint(raw.astype(np.float64) / 257.0), 0, 255)
        data = encode_image(Image.fromarray(raw), "PNG")
    elif mode == "I":
        raw = rng.integers(-1000, 3_000_000, size=shape, dtype=np.int32)
        expected = np.clip(np.rint(raw.astype(np.float64) / float(raw.max()) * 255.0), 0, 255)
        data = encode_image(Image.fromarray(raw), "TIFF")
    else:
        raw = rng.normal(size=shape).astype(np.float32)
        low, high = float(raw.min()), float(raw.max())
        expected = np.clip(np.rint((raw - low) * (255.0 / (high - low))), 0, 255)
        data = encode_image(Image.fromarray(raw), "TIFF")
    decoded = decode(data)
    assert decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), expected.astype(np.uint8))

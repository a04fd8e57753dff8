"""Turn image bytes into a PIL image the reference preprocessing accepts: decode, cap, orient, fix the mode.

The pixels then go through open_clip's own eval transform (resize shortest side to 224 bicubic with
antialias, center crop, to RGB, OpenAI mean/std), so preprocessing is the reference's by construction.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipserve.errors import ImageAspectRatioError, ImageTooLargeError, InvalidImageError

# (JPEG's opener also covers MPO, the multi-picture JPEG that many phone cameras write.)
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
EXIF_ORIENTATION = 0x0112

# Modes the reference transform (resize, then convert("RGB")) handles correctly as they are.
_PASSTHROUGH_MODES = frozenset({"RGB", "L", "RGBA", "LA"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# High-depth images are scaled to 8 bits a stripe at a time, so the work memory stays small at any size.
_STRIPE_PIXELS = 1 << 20

ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(
    data: bytes,
    *,
    max_pixels: int,
    max_aspect_ratio: float | None = None,
    draft_min_side: int | None = None,
) -> Image.Image:
    """Decode `data` into an RGB, RGBA, L or LA image, EXIF-oriented; reject what is not a safe image.

    The caps are checked on the header, before any pixel is decoded. `max_aspect_ratio` (longest side over
    shortest) bounds the reference transform's work: it resizes the short side to 224 before cropping, so an
    N:1 image costs an N*224 x 224 intermediate (a 3000x1 PNG of 90 bytes would need 650 MB).

    With `draft_min_side`, a JPEG much larger than that is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    (libjpeg's fast downscaling), never below `draft_min_side` pixels on its short side.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            _check_shape(width, height, max_pixels, max_aspect_ratio)
            image.seek(0)  # animated GIF/WebP/TIFF: the first frame
            if draft_min_side is not None and image.format in ("JPEG", "MPO"):
                _draft(image, draft_min_side)
            image.load()
            if image.width * image.height > width * height:
                raise InvalidImageError(f"image decoded larger than its header declared ({width}x{height})")
            if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            return _to_reference_mode(image)
    except (ImageTooLargeError, InvalidImageError, ImageAspectRatioError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            "could not decode the image: not a PNG, JPEG, WebP, GIF, BMP or TIFF file"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError) as exc:
        # Pillow signals truncated or corrupt files with a variety of these.
        raise InvalidImageError(f"could not decode the image: {exc}") from exc


def _check_shape(width: int, height: int, max_pixels: int, max_aspect_ratio: float | None) -> None:
    if width < 1 or height < 1:
        raise InvalidImageError("image has no pixels")
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    long, short = max(width, height), min(width, height)
    if max_aspect_ratio is not None and long > max_aspect_ratio * short:
        raise ImageAspectRatioError(
            f"image is {width}x{height}, an aspect ratio of {long / short:.4g}:1; the limit is "
            f"{max_aspect_ratio:g}:1 (the model sees only the centre square: crop or pad the image)"
        )


def _draft(image: Image.Image, min_side: int) -> None:
    width, height = image.size
    short = min(width, height)
    if short >= 2 * min_side:  # the draft can at least halve it
        scale = min_side / short
        image.draft(None, (max(1, round(width * scale)), max(1, round(height * scale))))


def _to_reference_mode(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in _PASSTHROUGH_MODES:
        return image
    if mode == "P":
        # The reference would resize a palette image with nearest-neighbour; expand the palette first.
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if mode == "PA":
        return image.convert("RGBA")
    if mode in _HIGH_DEPTH_MODES:
        return _to_8bit_gray(image)
    if mode == "1":
        return image.convert("L")
    return image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX, RGBa, La ...


def _to_8bit_gray(image: Image.Image) -> Image.Image:
    """Scale 16/32-bit or float grayscale to 8 bits (Pillow's convert would clip everything above 255).

    Float images are stretched over their finite range (NaN -> the low end, +-inf -> the ends); 32-bit
    integers above 65535 over [0, max]; the rest as 16-bit (65535 -> 255). One stripe of rows at a time.
    """
    width, height = image.size
    rows = max(1, _STRIPE_PIXELS // width)
    stripes = [(top, min(height, top + rows)) for top in range(0, height, rows)]

    def stripe(top: int, bottom: int) -> np.ndarray:
        return np.asarray(image.crop((0, top, width, bottom)))

    if image.mode == "F":
        low, high = math.inf, -math.inf
        for top, bottom in stripes:
            pixels = stripe(top, bottom)
            finite = pixels[np.isfinite(pixels)]
            if finite.size:
                low, high = min(low, float(finite.min())), max(high, float(finite.max()))
        if low > high:  # nothing finite
            low = high = 0.0
        scale = 255.0 / (high - low) if high > low else 0.0

        def scaled(pixels: np.ndarray) -> np.ndarray:
            stretched: np.ndarray = (np.nan_to_num(pixels, nan=low, posinf=high, neginf=low) - low) * scale
            return stretched

    else:
        peak = 0
        if image.mode == "I":
            peak = max(int(stripe(top, bottom).max(initial=0)) for top, bottom in stripes)

        def scaled(pixels: np.ndarray) -> np.ndarray:
            if peak > 65535:
                return pixels.astype(np.float64) / float(peak) * 255.0
            return pixels.astype(np.float64) / 257.0

    out = np.empty((height, width), dtype=np.uint8)
    for top, bottom in stripes:
        out[top:bottom] = np.clip(np.rint(scaled(stripe(top, bottom))), 0, 255)
    return Image.fromarray(out, mode="L")

"""Turn image bytes into a PIL image the reference preprocessing accepts: decode, cap, orient, fix the mode.

The pixels then go through open_clip's own eval transform (resize shortest side to 224 bicubic with
antialias, center crop, to RGB, OpenAI mean/std), so preprocessing is the reference's by construction.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from clipserve.errors import ImageTooLargeError, InvalidImageError

# (JPEG's opener also covers MPO, the multi-picture JPEG that many phone cameras write.)
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
EXIF_ORIENTATION = 0x0112

# Modes the reference transform (resize, then convert("RGB")) handles correctly as they are.
_PASSTHROUGH_MODES = frozenset({"RGB", "L", "RGBA", "LA"})
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})

ImageFile.LOAD_TRUNCATED_IMAGES = False


def decode_image(data: bytes, *, max_pixels: int, draft_min_side: int | None = None) -> Image.Image:
    """Decode `data` into an RGB, RGBA, L or LA image, EXIF-oriented; reject what is not a safe image.

    With `draft_min_side`, a JPEG much larger than that is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
    (libjpeg's fast downscaling), never below `draft_min_side` pixels on its short side.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
            width, height = image.size
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
                )
            if width < 1 or height < 1:
                raise InvalidImageError("image has no pixels")
            image.seek(0)  # animated GIF/WebP/TIFF: the first frame
            if draft_min_side is not None and image.format in ("JPEG", "MPO"):
                _draft(image, draft_min_side)
            image.load()
            if image.getexif().get(EXIF_ORIENTATION, 1) != 1:
                image = ImageOps.exif_transpose(image)
            return _to_reference_mode(image)
    except (ImageTooLargeError, InvalidImageError):
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
    """Scale 16/32-bit or float grayscale to 8 bits (Pillow's convert would clip everything above 255)."""
    pixels = np.asarray(image)
    if image.mode == "F":
        low, high = float(np.nanmin(pixels)), float(np.nanmax(pixels))
        scale = 255.0 / (high - low) if high > low else 0.0
        scaled = (np.nan_to_num(pixels, nan=low) - low) * scale
    elif image.mode == "I" and int(pixels.max(initial=0)) > 65535:
        scaled = pixels.astype(np.float64) / float(pixels.max()) * 255.0
    else:
        scaled = pixels.astype(np.float64) / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")

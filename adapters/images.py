"""Image decoding and preparation, shared by training and serving.

Every path decodes an upload with the same byte and pixel limits, then prepares
it with the image recipe its prompt format names (`prepare_image`):

- `letterbox` (this project's): apply the EXIF orientation, convert to RGB
  (flattening transparency onto white paper), scale to fit the square with
  rounded sizes, BICUBIC, centred on grey.
- `kidsartbench-release`: the published KidsArtBench inference preparation, in
  two steps. First the Qwen-VL loader's: RGB (RGBA flattened onto white, no EXIF
  orientation), sides rounded to multiples of 28 within 4..16384 patches of 28x28
  (aspect ratios above 200 refused), resized BICUBIC. Then their letter-box: scale
  to fit with `int()`-truncated sizes, BICUBIC, pasted at floor-centred offsets on
  grey.

The result is encoded once as PNG (lossless, so the engine and the reference
backend see identical pixels).
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from adapters.errors import ImageDecodeError, ImageTooLargeError
from adapters.limits import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_IMAGE_PIXELS

LETTERBOX_GREY = (128, 128, 128)
# The raster formats a child's artwork arrives in. Pillow is never asked to open anything else, so
# SVG, PDF, EPS/PostScript (which Pillow would hand to Ghostscript), HEIC and the rest are refused
# from their first bytes.
ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
_DATA_URL_TYPES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/jpg": "JPEG",
    "image/pjpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
    "image/tiff": "TIFF",
}


def decode_image(
    data: bytes, *, max_bytes: int = DEFAULT_MAX_IMAGE_BYTES, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
) -> Image.Image:
    """Decode image bytes fully, enforcing limits; raise a typed error naming the problem."""
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)  # reads the header only
            width, height = image.size  # a decompression bomb is refused here, before any pixel is decoded
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"the image is {width}x{height} = {width * height} pixels; the limit is {max_pixels} pixels"
                )
            image.seek(0)  # first frame of animated formats
            image.load()
    except ImageTooLargeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"the image exceeds the pixel limit: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(
            f"the data is not a recognised image format (accepted: {', '.join(ACCEPTED_FORMATS)})"
        ) from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"the image could not be decoded (truncated or corrupt): {exc}") from exc
    return image


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and integer greyscale (a scanner's PNG) scaled to 8 bits; Pillow's own convert clips at 255."""
    import numpy as np

    values = np.asarray(image, dtype=np.float64)
    top = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else values.max()
    if image.mode == "F":
        top = 1.0 if values.max(initial=0) <= 1.0 else values.max()
    return Image.fromarray(np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to RGB; transparent areas become white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8_bit(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, (255, 255, 255))
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    return image.convert("RGB")


def letterbox(image: Image.Image, size: int, fill: tuple[int, int, int] = LETTERBOX_GREY) -> Image.Image:
    """Scale to fit a size x size square keeping the aspect ratio, centred on `fill`."""
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), fill)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def normalize_image(image: Image.Image, size: int) -> Image.Image:
    """EXIF-orient, RGB, letter-box to size x size on grey."""
    return letterbox(to_rgb(image), size)


# The Qwen-VL loader's bounds, as the KidsArtBench release used them (28 = 14-pixel patches x 2x2 merge).
RELEASE_FACTOR = 28
RELEASE_MIN_PIXELS = 4 * RELEASE_FACTOR * RELEASE_FACTOR
RELEASE_MAX_PIXELS = 16384 * RELEASE_FACTOR * RELEASE_FACTOR
RELEASE_MAX_RATIO = 200


def release_loader_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) after the loader's first resize: multiples of 28 within its pixel bounds."""
    if max(width, height) / min(width, height) > RELEASE_MAX_RATIO:
        raise ImageDecodeError(
            f"the image is {width}x{height}: an aspect ratio above {RELEASE_MAX_RATIO} is refused by the "
            "kidsartbench-release image recipe"
        )
    factor = RELEASE_FACTOR
    new_h = max(factor, round(height / factor) * factor)
    new_w = max(factor, round(width / factor) * factor)
    if new_h * new_w > RELEASE_MAX_PIXELS:
        beta = math.sqrt(height * width / RELEASE_MAX_PIXELS)
        new_h = math.floor(height / beta / factor) * factor
        new_w = math.floor(width / beta / factor) * factor
    elif new_h * new_w < RELEASE_MIN_PIXELS:
        beta = math.sqrt(RELEASE_MIN_PIXELS / (height * width))
        new_h = math.ceil(height * beta / factor) * factor
        new_w = math.ceil(width * beta / factor) * factor
    return new_w, new_h


def release_image(image: Image.Image, size: int) -> Image.Image:
    """The kidsartbench-release recipe (module docstring)."""
    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.getchannel("A"))
    else:
        rgb = image.convert("RGB")
    rgb = rgb.resize(release_loader_size(*rgb.size), Image.Resampling.BICUBIC)
    width, height = rgb.size
    scale = min(size / width, size / height)
    new_w, new_h = int(width * scale), int(height * scale)
    resized = rgb.resize((new_w, new_h), Image.Resampling.BICUBIC)
    canvas = Image.new("RGB", (size, size), LETTERBOX_GREY)
    canvas.paste(resized, ((size - new_w) // 2, (size - new_h) // 2))
    return canvas


def prepare_image(image: Image.Image, size: int, recipe: str) -> Image.Image:
    """A decoded image as the model's size x size input, by the named recipe."""
    if recipe == "letterbox":
        return normalize_image(image, size)
    if recipe == "kidsartbench-release":
        return release_image(image, size)
    raise ValueError(f"unknown image recipe {recipe!r} (known: letterbox, kidsartbench-release)")


def normalize_bytes(
    data: bytes,
    size: int,
    *,
    recipe: str,
    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode with limits, then prepare by `recipe`."""
    return prepare_image(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels), size, recipe)


def decode_base64_image(text: str) -> bytes:
    """Accept raw base64 or a `data:image/...;base64,` URL; raise ImageDecodeError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ImageDecodeError("the image field is empty")
    payload = text.strip()
    declared = None
    if payload.startswith("data:"):
        header, sep, payload = payload.partition(",")
        if not sep or ";base64" not in header:
            raise ImageDecodeError("a data URL must look like data:image/<type>;base64,<data>")
        mime = header[len("data:") :].split(";")[0].strip().lower()
        declared = _DATA_URL_TYPES.get(mime)
        if declared is None:
            raise ImageDecodeError(
                f"a data URL of type {mime or '(none)'!r} is not accepted "
                f"(accepted: {', '.join(sorted(_DATA_URL_TYPES))})"
            )
    elif "://" in payload[:16] or payload.startswith(("file:", "http:", "https:")):
        raise ImageDecodeError(
            "only base64 or data: URLs are accepted: the service never fetches a URL or reads a file"
        )
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"the image is not valid base64: {exc}") from exc
    if declared is not None:
        actual = sniff_format(data)
        if actual is not None and actual != declared:
            raise ImageDecodeError(f"the data URL says {mime} but the bytes are {actual}")
    return data


def sniff_format(data: bytes) -> str | None:
    """The accepted format the bytes' header names, or None (the decoder then says what is wrong)."""
    try:
        with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
            return image.format
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError, EOFError):
        return None  # decode_image reports what is wrong, with the limits applied

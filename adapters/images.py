"""Image decoding and normalisation, shared by training and serving.

KidsArtBench letter-boxes every artwork onto a grey square of the model's input
size. Here that is one function: decode the bytes (with byte and pixel limits),
apply the EXIF orientation, convert to RGB (flattening transparency onto white
paper), scale to fit and pad with grey. The result is encoded once as PNG
(lossless, so the engine and the reference backend see identical pixels).
"""
from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from adapters.errors import ImageDecodeError, ImageTooLargeError

LETTERBOX_GREY = (128, 128, 128)
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


def decode_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode image bytes fully, enforcing limits; raise a typed error naming the problem."""
    if not data:
        raise ImageDecodeError("the image is empty (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLargeError(f"the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
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
        raise ImageDecodeError("the data is not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"the image could not be decoded (truncated or corrupt): {exc}") from exc
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Apply EXIF orientation and convert to RGB; transparent areas become white paper."""
    image = ImageOps.exif_transpose(image)
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


def normalize_bytes(data: bytes, size: int, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    return normalize_image(decode_image(data, max_bytes=max_bytes, max_pixels=max_pixels), size)


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=1)
    return buffer.getvalue()


def png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def decode_base64_image(text: str) -> bytes:
    """Accept raw base64 or a `data:image/...;base64,` URL; raise ImageDecodeError otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise ImageDecodeError("the image field is empty")
    payload = text.strip()
    if payload.startswith("data:"):
        header, sep, payload = payload.partition(",")
        if not sep or ";base64" not in header:
            raise ImageDecodeError("a data URL must look like data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"the image is not valid base64: {exc}") from exc

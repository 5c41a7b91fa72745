"""Awkward-but-valid and hostile image inputs, made here from a fixed seed (shared by the unit and live tests)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.conftest import drawing


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _exif_rotated() -> bytes:
    image = drawing(71, (120, 60))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to view
    return _save(image, "JPEG", exif=exif.tobytes())


def awkward_images() -> dict[str, bytes]:
    """Valid inputs a scanner, phone or paint program produces; every one must be scored."""
    art = drawing(70, (96, 72))
    rng = np.random.default_rng(70)
    second = drawing(72, (96, 72))
    rgba = art.convert("RGBA")
    rgba.putalpha(Image.fromarray((rng.random((72, 96)) * 255).astype(np.uint8)))
    return {
        "cmyk.jpg": _save(art.convert("CMYK"), "JPEG"),
        "grey16.png": _save(Image.fromarray((rng.random((72, 96)) * 65535).astype(np.uint16)), "PNG"),
        "palette.png": _save(art.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "alpha.png": _save(rgba, "PNG"),
        "exif-rotated.jpg": _exif_rotated(),
        "progressive.jpg": _save(art, "JPEG", progressive=True, quality=80),
        "animated.gif": _save(art, "GIF", save_all=True, append_images=[second], duration=100, loop=0),
        "animated.webp": _save(art, "WEBP", save_all=True, append_images=[second], duration=100),
        "one-pixel.png": _save(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"),
        "very-wide.png": _save(Image.new("RGB", (3000, 4), (10, 200, 10)), "PNG"),
        "very-tall.png": _save(Image.new("RGB", (4, 3000), (10, 10, 200)), "PNG"),
    }


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header declares width x height pixels (10 G by default)."""
    small = _save(Image.new("1", (1, 1)), "PNG")
    ihdr_at = small.index(b"IHDR")
    fields = struct.pack(">II", width, height) + small[ihdr_at + 12 : ihdr_at + 17]
    chunk = b"IHDR" + fields
    patched = small[:ihdr_at] + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[ihdr_at + 4 + 13 + 4 :]
    return patched


def hostile_images() -> dict[str, tuple[bytes, str]]:
    """Inputs that must be refused with a 4xx: (bytes, a fragment of the error message)."""
    svg = (
        b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
        b'<rect width="10" height="10"/></svg>'
    )
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n"
    return {
        "bomb.png": (png_bomb(), "pixels"),  # 10 G pixels: beyond Pillow's own guard
        "bomb-81mp.png": (png_bomb(9000, 9000), "pixels"),  # beyond the profile's 40 M limit, under Pillow's
        "drawing.svg": (svg, "not a recognised image format"),
        "drawing.pdf": (pdf, "not a recognised image format"),
        "photo.heic": (heic, "not a recognised image format"),
        "drawing.eps": (eps, "not a recognised image format"),
    }

"""Image decoding and normalisation: EXIF, RGB, letter-box, limits, typed errors."""
import base64

import pytest
from PIL import Image

from adapters.errors import ImageDecodeError, ImageTooLargeError
from adapters.images import (
    LETTERBOX_GREY, decode_base64_image, decode_image, encode_png, normalize_bytes, png_data_url,
)
from tests.conftest import png_bytes


def test_letterbox_wide_image_pads_top_and_bottom_with_grey():
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    out = normalize_bytes(png_bytes(image), 224)
    assert out.size == (224, 224) and out.mode == "RGB"
    assert out.getpixel((112, 5)) == LETTERBOX_GREY
    assert out.getpixel((112, 112)) == (255, 0, 0)


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (400, 200), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes())
    out = normalize_bytes(buffer.getvalue(), 224)
    # displayed upright the picture is tall (200x400), so the grey bars are left and right
    assert out.getpixel((5, 112)) == LETTERBOX_GREY
    assert out.getpixel((112, 5)) != LETTERBOX_GREY


def test_transparency_becomes_white_paper_and_modes_become_rgb():
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    out = normalize_bytes(png_bytes(image), 224)
    assert out.getpixel((112, 112)) == (255, 255, 255)
    grey = Image.new("L", (50, 50), 30)
    assert normalize_bytes(png_bytes(grey), 224).getpixel((112, 112)) == (30, 30, 30)


def test_gif_first_frame_is_used():
    frames = [Image.new("P", (60, 60), 1), Image.new("P", (60, 60), 2)]
    from io import BytesIO

    buffer = BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert normalize_bytes(buffer.getvalue(), 224).size == (224, 224)


@pytest.mark.parametrize("data, match", [
    (b"", "empty"),
    (b"hello, not an image", "not a recognised image"),
])
def test_bad_bytes_are_decode_errors(data, match):
    with pytest.raises(ImageDecodeError, match=match):
        decode_image(data)


def test_truncated_png_is_a_decode_error():
    data = png_bytes(Image.new("RGB", (300, 300), (1, 2, 3)))
    with pytest.raises(ImageDecodeError):
        decode_image(data[: len(data) // 2])


def test_limits_raise_too_large():
    data = png_bytes(Image.new("RGB", (100, 100)))
    with pytest.raises(ImageTooLargeError, match="bytes"):
        decode_image(data, max_bytes=10)
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(data, max_pixels=99 * 99)


def test_base64_and_data_urls():
    raw = png_bytes(Image.new("RGB", (10, 10)))
    assert decode_base64_image(base64.b64encode(raw).decode()) == raw
    assert decode_base64_image(png_data_url(raw)) == raw
    with pytest.raises(ImageDecodeError, match="base64"):
        decode_base64_image("not base64 !!!")
    with pytest.raises(ImageDecodeError):
        decode_base64_image("")
    with pytest.raises(ImageDecodeError, match="data URL"):
        decode_base64_image("data:image/png,abc")


def test_png_encoding_is_lossless():
    image = normalize_bytes(png_bytes(Image.new("RGB", (123, 77), (9, 99, 199))), 224)
    again = Image.open(__import__("io").BytesIO(encode_png(image)))
    assert list(again.getdata()) == list(image.getdata())

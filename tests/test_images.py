"""Image decoding and normalisation: EXIF, RGB, letter-box, limits, typed errors."""

import base64

import pytest
from PIL import Image

from adapters.errors import ImageDecodeError, ImageTooLargeError
from adapters.images import (
    LETTERBOX_GREY,
    decode_base64_image,
    decode_image,
    normalize_bytes,
)
from tests.conftest import png_bytes


def test_letterbox_wide_image_pads_top_and_bottom_with_grey():
    image = Image.new("RGB", (400, 200), (255, 0, 0))
    out = normalize_bytes(png_bytes(image), 224, recipe="letterbox")
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
    out = normalize_bytes(buffer.getvalue(), 224, recipe="letterbox")
    # displayed upright the picture is tall (200x400), so the grey bars are left and right
    assert out.getpixel((5, 112)) == LETTERBOX_GREY
    assert out.getpixel((112, 5)) != LETTERBOX_GREY


def test_transparency_becomes_white_paper_and_modes_become_rgb():
    image = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    out = normalize_bytes(png_bytes(image), 224, recipe="letterbox")
    assert out.getpixel((112, 112)) == (255, 255, 255)
    grey = Image.new("L", (50, 50), 30)
    assert normalize_bytes(png_bytes(grey), 224, recipe="letterbox").getpixel((112, 112)) == (30, 30, 30)


def test_gif_first_frame_is_used():
    frames = [Image.new("P", (60, 60), 1), Image.new("P", (60, 60), 2)]
    from io import BytesIO

    buffer = BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    assert normalize_bytes(buffer.getvalue(), 224, recipe="letterbox").size == (224, 224)


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "empty"),
        (b"hello, not an image", "not a recognised image"),
    ],
)
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
    assert decode_base64_image("data:image/png;base64," + base64.b64encode(raw).decode()) == raw
    with pytest.raises(ImageDecodeError, match="base64"):
        decode_base64_image("not base64 !!!")
    with pytest.raises(ImageDecodeError):
        decode_base64_image("")
    with pytest.raises(ImageDecodeError, match="data URL"):
        decode_base64_image("data:image/png,abc")


# ---- the kidsartbench-release recipe, pixel for pixel against the published procedure ----


def _their_preparation(path):
    """The published inference's image path, written here from its description: the Qwen-VL
    loader (qwen_vl_utils, the library they call), then their resize_image to 224."""
    from qwen_vl_utils import process_vision_info

    images, _ = process_vision_info([{"role": "user", "content": [{"type": "image", "image": str(path)}]}])
    image = images[0]
    ratio = min(224 / image.width, 224 / image.height)
    new_size = (int(image.width * ratio), int(image.height * ratio))
    image = image.resize(new_size, Image.BICUBIC)
    canvas = Image.new("RGB", (224, 224), (128, 128, 128))
    canvas.paste(image, ((224 - new_size[0]) // 2, (224 - new_size[1]) // 2))
    return canvas


@pytest.mark.parametrize(
    "size, mode",
    [
        ((300, 200), "RGB"),
        ((1024, 768), "RGB"),
        ((199, 731), "RGB"),
        ((50, 40), "RGB"),  # tiny: min-pixels rule
        ((640, 480), "RGBA"),
        ((333, 333), "P"),
        ((480, 640), "L"),
        ((5000, 4000), "RGB"),  # above the loader's max pixels
    ],
)
def test_release_recipe_equals_the_published_procedure(tmp_path, size, mode):
    import numpy as np

    from adapters.images import normalize_bytes

    rng = np.random.default_rng(size[0] * 10_007 + size[1])  # a fixed seed per case
    # random blocks at most 97 px across, so that big cases stay small as PNG files
    coarse = rng.integers(0, 256, (max(2, size[1] // 7), max(2, size[0] // 7), 4), dtype=np.uint8)
    image = Image.fromarray(coarse, "RGBA").resize(size, Image.NEAREST)
    image = image if mode == "RGBA" else image.convert("RGB").convert(mode)
    path = tmp_path / "art.png"
    image.save(path)
    ours = normalize_bytes(path.read_bytes(), 224, recipe="kidsartbench-release")
    assert ours.size == (224, 224) and ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(_their_preparation(path)))


def test_release_recipe_differs_from_ours_where_their_rules_differ(tmp_path):
    """int() truncation and the loader's multiple-of-28 resize: not the same pixels as our letter-box."""
    import numpy as np

    from adapters.images import normalize_bytes

    data = png_bytes(Image.fromarray(np.random.default_rng(3).integers(0, 256, (211, 307, 3), dtype=np.uint8)))
    ours = np.asarray(normalize_bytes(data, 224, recipe="letterbox"))
    release = np.asarray(normalize_bytes(data, 224, recipe="kidsartbench-release"))
    assert not np.array_equal(ours, release)


def test_release_recipe_refuses_extreme_aspect_ratios():
    from adapters.errors import ImageDecodeError
    from adapters.images import normalize_bytes

    with pytest.raises(ImageDecodeError, match="aspect ratio above 200"):
        normalize_bytes(png_bytes(Image.new("RGB", (2010, 10))), 224, recipe="kidsartbench-release")

"""Awkward images are prepared, hostile ones refused from their header, without a stack (adapters.images)."""

import base64
import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from adapters.errors import ImageDecodeError, ImageTooLargeError
from adapters.images import decode_base64_image, normalize_bytes
from tests.hostile_images import awkward_images, hostile_images, png_bomb

AWKWARD = awkward_images()
HOSTILE = hostile_images()


@pytest.mark.parametrize("name", sorted(AWKWARD))
def test_awkward_images_are_prepared(name):
    image = normalize_bytes(AWKWARD[name], 224, recipe="letterbox")
    assert image.mode == "RGB" and image.size == (224, 224)


def test_16_bit_greyscale_keeps_its_tones_and_exif_orientation_is_applied():
    grey = np.asarray(normalize_bytes(AWKWARD["grey16.png"], 224, recipe="letterbox"), dtype=float)
    assert 100 < grey[60:160, 20:200].mean() < 155  # uniform noise over the 16-bit range, not clipped to white
    rotated = Image.open(io.BytesIO(AWKWARD["exif-rotated.jpg"]))
    assert rotated.size == (120, 60)
    prepared = np.asarray(normalize_bytes(AWKWARD["exif-rotated.jpg"], 224, recipe="letterbox"))
    # upright it is 60 wide and 120 tall: grey letter-box bars left and right, none above and below
    assert (prepared[:, :40] == 128).all() and not (prepared[:20, 100:124] == 128).all()


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_images_are_refused_with_a_clear_error(name):
    data, fragment = HOSTILE[name]
    with pytest.raises((ImageDecodeError, ImageTooLargeError), match=fragment):
        normalize_bytes(data, 224, recipe="letterbox", max_pixels=40_000_000)


def test_a_bomb_is_refused_from_its_header_without_decoding_pixels():
    tracemalloc.start()
    with pytest.raises(ImageTooLargeError, match="pixels"):
        normalize_bytes(png_bomb(9000, 9000), 224, recipe="letterbox", max_pixels=40_000_000)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000  # decoding 81 M pixels would need 81 MB or more


def test_data_urls_must_match_their_bytes_and_nothing_is_ever_fetched():
    png = base64.b64encode(AWKWARD["one-pixel.png"]).decode()
    assert decode_base64_image(f"data:image/png;base64,{png}") == AWKWARD["one-pixel.png"]
    with pytest.raises(ImageDecodeError, match="says image/jpeg but the bytes are PNG"):
        decode_base64_image(f"data:image/jpeg;base64,{png}")
    with pytest.raises(ImageDecodeError, match="'image/svg\\+xml' is not accepted"):
        decode_base64_image("data:image/svg+xml;base64," + base64.b64encode(HOSTILE["drawing.svg"][0]).decode())
    for url in ("http://example.com/a.png", "https://example.com/a.png", "file:///etc/passwd", "ftp://x/y.png"):
        with pytest.raises(ImageDecodeError, match="never fetches a URL or reads a file"):
            decode_base64_image(url)

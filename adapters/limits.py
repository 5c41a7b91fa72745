"""The image size and the input limits, defined once.

Defaults and bounds live here; a profile overrides them (`image_size`,
`router.max_image_bytes`, `router.max_image_pixels`) and `Profile.limits` gathers them.
Everything that decodes or sizes an artwork (the router, the reference backend, the
district job's discovery and its Ray pipeline, training data) takes an `InputLimits`;
a client without a profile (`score-district --url`, the load test) reads them from the
router's `GET /v1/models` listing (`serve.client.ServedModels`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_IMAGE_SIZE = 224
DEFAULT_MAX_IMAGE_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000

ImageSize = Annotated[int, Field(ge=28, le=4096, description="Side of the letter-boxed square image, in pixels.")]
ImageBytes = Annotated[int, Field(ge=1024, le=1 << 30, description="Largest accepted image file in bytes (413 above).")]
ImagePixels = Annotated[int, Field(ge=1, le=1_000_000_000, description="Largest accepted width*height (413 above).")]


class InputLimits(BaseModel):
    """What an artwork may be, and the size it is scored at."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_size: ImageSize = DEFAULT_IMAGE_SIZE
    max_image_bytes: ImageBytes = DEFAULT_MAX_IMAGE_BYTES
    max_image_pixels: ImagePixels = DEFAULT_MAX_IMAGE_PIXELS


DEFAULT_LIMITS = InputLimits()

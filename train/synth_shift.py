"""Documented distribution shifts of the synthetic drawings: a "new district" whose art differs as a real one's
might, with the same labels drawn by the same rules (`kidsart synth --shift NAME`).

A shift changes how the drawing looks, never what its labels mean: the number of hues, the
figure's parts, the motifs, the stroke kinds and the layout are drawn exactly as in
`train.synth`; what changes is the paper, the medium, the width of the strokes and the
palette. The adapters were trained on cream paper, felt-pen colours and 2-4 px strokes; on a
shifted district they read the same drawing parameters through a different surface, so they
score worse there (the loop study in docs/learning-loop.md measures how much, and how much
corrections of such a district recover).

`new-district`:
- paper: brown kraft (RGB ~200/184/156) with a coarser grain (the original: cream, ~248/244/232);
- medium: wax crayon, ~35% of every coloured or inked area left as paper in horizontal streaks;
- strokes: half as wide (1-2 px instead of 2-4);
- palette: muted and brighter (saturation 0.35-0.55, value 0.75-0.95; the original 0.8-1.0 and 0.55-0.8).

The shift's own random draws (grain, streaks) come from a generator of their own, so the
unshifted drawings stay exactly what the committed adapters were trained on.
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field


class Shift(BaseModel):
    """One named shift of the synthetic drawings' appearance."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="The name `--shift` takes.")
    paper_rgb: tuple[float, float, float] = Field(description="Mean paper tone.")
    grain: float = Field(ge=0, description="Standard deviation of the paper's grain (the original: 3).")
    saturation: tuple[float, float] = Field(description="Range of the palette's saturation (original: 0.8-1.0).")
    value: tuple[float, float] = Field(description="Range of the palette's value (original: 0.55-0.8).")
    stroke_scale: float = Field(gt=0, le=4, description="Stroke widths times this (at least 1 px).")
    crayon_gaps: float = Field(
        ge=0, lt=1, description="Share of coloured/inked pixels left as paper, in horizontal streaks (wax crayon)."
    )


SHIFTS = {
    "new-district": Shift(
        name="new-district",
        paper_rgb=(200.0, 184.0, 156.0),
        grain=6.0,
        saturation=(0.35, 0.55),
        value=(0.75, 0.95),
        stroke_scale=0.5,
        crayon_gaps=0.35,
    )
}


def get_shift(name: str | None) -> Shift | None:
    """The named shift (None for none); ValueError naming the known ones."""
    if name is None or name == "":
        return None
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {sorted(SHIFTS)}")
    return SHIFTS[name]


def shift_rng(seed: int) -> np.random.Generator:
    """The shift's own generator for one artwork (its draws never move the drawing's own)."""
    return np.random.default_rng([20261207, int(seed)])


def shifted_paper(shift: Shift, rng: np.random.Generator, width: int, height: int) -> Image.Image:
    tone = np.asarray(shift.paper_rgb) + rng.uniform(-6, 6, size=3)
    grain = rng.normal(0.0, shift.grain, size=(height, width, 1))
    return Image.fromarray(np.clip(tone[None, None, :] + grain, 0, 255).astype(np.uint8), "RGB")


def crayon(image: Image.Image, paper: Image.Image, shift: Shift, rng: np.random.Generator) -> Image.Image:
    """Wax-crayon texture: where the drawing differs from the paper, streaks of paper show through."""
    if shift.crayon_gaps <= 0:
        return image
    drawn, bare = np.asarray(image).astype(np.int16), np.asarray(paper)
    height, width = drawn.shape[:2]
    # streaks: noise stretched 8x along the rows, thresholded at the wanted share
    noise = rng.random((height, max(1, width // 8)))
    streaks = np.repeat(noise, 8, axis=1)[:, :width] < shift.crayon_gaps
    inked = np.abs(drawn - bare).sum(axis=2) > 30
    out = drawn.astype(np.uint8).copy()
    gaps = streaks & inked
    out[gaps] = bare[gaps]
    return Image.fromarray(out, "RGB")

"""Procedurally drawn, children's-drawing-like images with known rubric labels.

These images VERIFY THE PIPELINE; they are not art and their labels are not art
judgements. Every KidsArtBench dimension's label is drawn first and then drives a
drawing parameter that is visible in the picture, so the "truth" of each label is
known exactly and an adapter can, in principle, learn it:

| dimension | what the label (1-5) controls in the drawing |
|---|---|
| color_richness | number of distinct hues of the coloured shapes: 1, 2, 3-4, 5-6, 7-8, spread around the colour wheel; 2 + 3 x hues shapes, so a richer palette also colours more of the page |
| color_contrast | figure/ground contrast: how far the shapes' colours are from the paper tone (22% .. 100% of full strength) |
| line_texture | variety of ink stroke styles: 1..5 of {solid, dashed, zigzag, wavy-thick, dotted}, over 3 + level strokes; pattern periods ~10 px on the 400 px page (~6 px after the 224 px letter-box: at the earlier 6 px, ~3 px after letter-boxing, the kinds blurred together) |
| picture_organization | layout: shapes crowded in a small off-centre region (1) .. evenly spread over the page on a grid (5) |
| realism (stand-in) | completeness of the stick figure (drawn at twice the shapes' unit, thick lines): head only (1) .. head, body, limbs, face, hands/feet, shirt and a ground line (5) |
| deformation (stand-in) | distortion of the figure's proportions: head scale 1.0x .. 3.2x and stretched limbs |
| imagination (stand-in) | number of fantastic motifs (spirals, stars, floating eyes, ~20-27 px across after letter-boxing): 0, 1, 2, 4, 6 |
| line_combination (stand-in) | number of joined segments in a connected line web drawn in thick blue pencil (~5-6 px after letter-boxing): 1, 3, 6, 10, 15 |
| transformation (stand-in) | share of coloured shapes transformed (twisted into spiky, sheared bursts of 5-7 points, hatched in ink): 0 .. 100% |

Readable at 224 px: the vision encoder sees 14 px patches of the letter-boxed image
(a 400x300 drawing shrinks by 0.56). The first version drew the figure, the motifs
and the pencil web finer than a patch (a ~12 px head, ~8 px motifs, ~2 px lines)
and twisted shapes as random 3-6 corner polygons that often looked like the
untwisted ones. A ridge read-out of the then base's pooled image tokens predicted
realism, deformation, imagination, line_combination and transformation at
held-out Spearman 0.02-0.07; spiky bursts without hatching were read at 0.50. The
rules above are the fixed ones.

The creativity rubric (`creativity5`: originality, color, texture, composition,
content) is read from the same drawings (`write_dataset(rubric="creativity5")`,
`kidsart synth --rubric creativity5`): originality = imagination's motifs, color =
color_richness's hues, texture = line_texture's stroke styles, composition =
picture_organization's layout, content = realism's figure (stand-ins again).

Labels are independent across dimensions (uniform over 1-5 by default, or
KidsArtBench's training-set marginals with `distribution="kidsartbench"`). The
grade (1-6) follows KidsArtBench's grade marginals and only changes the stroke
width jitter. The description is a plain account of what is drawn.

`render_drawing_details` returns the facts of a drawing (colours, shapes, layout,
figure, strokes, motifs) for the base's pre-training (`train/vision_pretrain.py`, `train/captions.py`).
"""

from __future__ import annotations

import colorsys
import logging
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from adapters.rubric import DEFAULT_RUBRIC
from train.synth_marks import HEAD_SCALE, draw_figure, draw_motif, draw_stroke, hatch
from train.synth_shift import crayon, get_shift, shift_rng, shifted_paper

log = logging.getLogger(__name__)

DIMENSIONS = (
    "realism",
    "deformation",
    "imagination",
    "color_richness",
    "color_contrast",
    "line_combination",
    "line_texture",
    "picture_organization",
    "transformation",
)

# The creativity rubric (creativity5, arXiv 2602.13306) read from the same drawings: each of its
# dimensions is the visible parameter of a KidsArtBench one (stand-ins, as the table above says).
CREATIVITY_FROM = {
    "originality": "imagination",  # fantastic motifs
    "color": "color_richness",  # distinct hues
    "texture": "line_texture",  # stroke styles
    "composition": "picture_organization",  # layout
    "content": "realism",  # completeness of the figure
}
RUBRIC_LABELS = {"kidsartbench": {d: d for d in DIMENSIONS}, "creativity5": CREATIVITY_FROM}

# KidsArtBench train.csv label counts per level 1..5 (946 artworks) and grade counts 1..6.
KIDSARTBENCH_MARGINALS = {
    "realism": [550, 373, 23, 0, 0],
    "deformation": [1, 11, 202, 719, 13],
    "imagination": [0, 0, 4, 275, 667],
    "color_richness": [17, 33, 341, 412, 143],
    "color_contrast": [14, 49, 362, 446, 75],
    "line_combination": [1, 89, 637, 207, 12],
    "line_texture": [1, 376, 454, 103, 12],
    "picture_organization": [1, 55, 663, 227, 0],
    "transformation": [1, 4, 209, 640, 92],
}
GRADE_COUNTS = [62, 402, 397, 106, 58, 21]

_HUE_COUNTS = {1: (1, 1), 2: (2, 2), 3: (3, 4), 4: (5, 6), 5: (7, 8)}
_CONTRAST = {1: 0.22, 2: 0.4, 3: 0.6, 4: 0.8, 5: 1.0}
_STROKE_STYLES = ("solid", "dashed", "zigzag", "wavy", "dotted")
_SPREAD = {1: 0.32, 2: 0.45, 3: 0.6, 4: 0.8, 5: 1.0}
_MOTIFS = {1: 0, 2: 1, 3: 2, 4: 4, 5: 6}
_SEGMENTS = {1: 1, 2: 3, 3: 6, 4: 10, 5: 15}
_TRANSFORMED = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.75, 5: 1.0}
FIGURE_SCALE = 2.0  # the stick figure's unit, relative to the coloured shapes' unit
PENCIL = (70, 90, 150)  # the joined line web (line_combination) is drawn in blue pencil, apart from the ink strokes


def _sample_labels(rng: np.random.Generator, distribution: str) -> dict[str, int]:
    labels = {}
    for dim in DIMENSIONS:
        if distribution == "uniform":
            labels[dim] = int(rng.integers(1, 6))
        elif distribution == "kidsartbench":
            counts = np.asarray(KIDSARTBENCH_MARGINALS[dim], dtype=float)
            labels[dim] = int(rng.choice(5, p=counts / counts.sum())) + 1
        else:
            raise ValueError(f"unknown label distribution {distribution!r} (uniform or kidsartbench)")
    return labels


def _paper(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A cream/white paper with a faint grain."""
    tone = np.array([248, 244, 232], dtype=float) + rng.uniform(-8, 6, size=3)
    grain = rng.normal(0.0, 3.0, size=(height, width, 1))
    pixels = np.clip(tone[None, None, :] + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def _palette(
    rng: np.random.Generator, n_hues: int, strength: float, paper: tuple[float, float, float], shift=None
) -> tuple[list[tuple[int, int, int]], list[float]]:
    """n_hues evenly spread hues, blended toward the paper tone by (1 - strength); (colours, hues in [0, 1))."""
    offset = rng.uniform(0, 1)
    saturation, value = (shift.saturation, shift.value) if shift is not None else ((0.8, 1.0), (0.55, 0.8))
    colours, hues = [], []
    for i in range(n_hues):
        hue = (offset + i / n_hues + rng.uniform(-0.02, 0.02)) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value))
        pure = np.array([r, g, b]) * 255
        mixed = np.asarray(paper) * (1 - strength) + pure * strength
        colours.append(tuple(int(round(c)) for c in mixed))
        hues.append(float(hue))
    return colours, hues


def render_artwork(
    seed: int, width: int = 400, height: int = 300, distribution: str = "uniform"
) -> tuple[Image.Image, dict[str, int]]:
    """Draw one synthetic artwork from `seed`; return (RGB image, labels for the nine KidsArtBench dimensions)."""
    image, labels, _, _ = render_record(seed, width, height, distribution)
    return image, labels


def _draw(
    rng: np.random.Generator, labels: dict[str, int], width: int, height: int, grade: int, shift=None, seed: int = 0
) -> tuple[Image.Image, dict]:
    """The drawing for `labels`, one element per rubric dimension, in a fixed order of random draws (the
    committed adapters were trained on exactly these images: reorder nothing). `shift` (train.synth_shift)
    changes paper, medium, stroke width and palette, with the same draws, so the same labels and layout."""
    image = _paper(rng, width, height)
    shift_draws = shift_rng(seed) if shift is not None else None
    if shift is not None:
        image = shifted_paper(shift, shift_draws, width, height)
    paper = image.copy()
    paper_tone = tuple(float(v) for v in np.asarray(image).reshape(-1, 3).mean(axis=0))
    draw = ImageDraw.Draw(image)
    unit = min(width, height) / 10
    line_w = max(2, int(round(3 + rng.uniform(-1, 1) * (7 - grade) / 6)))
    if shift is not None:
        line_w = max(1, int(round(line_w * shift.stroke_scale)))
    details = _shapes(image, draw, rng, labels, width, height, unit, paper_tone, shift)

    # Figure: realism (completeness) and deformation (proportions). Drawn at twice the shapes' unit with
    # thick lines: at the first size its head was ~12 px and its lines ~2 px after the 224 px letter-box,
    # finer than the vision encoder's 14 px patches, and no trained base could read its parts.
    fx, fy = rng.uniform(0.3, 0.7) * width, rng.uniform(0.18, 0.3) * height
    draw_figure(draw, rng, fx, fy, unit * FIGURE_SCALE, labels["realism"], labels["deformation"], line_w + 3)
    details.update(_strokes(draw, rng, labels["line_texture"], width, height, line_w))
    details["n_segments"] = _line_web(draw, rng, labels["line_combination"], width, height, line_w)

    # Fantastic motifs: imagination.
    n_motifs = _MOTIFS[labels["imagination"]]
    for m in range(n_motifs):
        # ~20-27 px across after letter-boxing (was ~8-12 px, under one 14 px patch).
        draw_motif(
            draw,
            rng,
            rng.uniform(0.08, 0.92) * width,
            rng.uniform(0.08, 0.92) * height,
            unit * rng.uniform(0.65, 0.85),
            m % 3,
        )

    if shift is not None:
        image = crayon(image, paper, shift, shift_draws)
    image = image.filter(ImageFilter.SMOOTH)
    details.update(
        {
            "strength": _CONTRAST[labels["color_contrast"]],
            "n_motifs": n_motifs,
            "motif_kinds": [m % 3 for m in range(n_motifs)],
            "grid": labels["picture_organization"] >= 4,
            "figure_parts": labels["realism"],
            "head_scale": HEAD_SCALE[labels["deformation"]],
            "grade": grade,
        }
    )
    return image, details


def _shapes(
    image, draw, rng, labels: dict[str, int], width: int, height: int, unit: float, paper_tone, shift=None
) -> dict:
    """Coloured shapes: hue count (color_richness), strength (color_contrast), layout (picture_organization),
    transformed share (transformation). Their details for the description."""
    n_hues = int(rng.integers(_HUE_COUNTS[labels["color_richness"]][0], _HUE_COUNTS[labels["color_richness"]][1] + 1))
    palette, hues = _palette(rng, n_hues, _CONTRAST[labels["color_contrast"]], paper_tone, shift)
    n_shapes = 2 + 3 * n_hues  # each hue gets its own shapes: a richer palette also colours more of the page
    spread = _SPREAD[labels["picture_organization"]]
    region_w, region_h = width * spread, height * spread
    corner = None
    if labels["picture_organization"] == 5:
        ox, oy = 0.0, 0.0
    else:
        corner = int(rng.integers(0, 4))
        ox = 0.0 if corner in (0, 2) else width - region_w
        oy = 0.0 if corner in (0, 1) else height - region_h
    cols = 4
    n_transformed = int(round(_TRANSFORMED[labels["transformation"]] * n_shapes))
    transformed = set(rng.permutation(n_shapes)[:n_transformed].tolist())
    shape_kinds = {"rectangle": 0, "circle": 0, "irregular": 0}
    for i in range(n_shapes):
        if labels["picture_organization"] >= 4:
            gx, gy = (i % cols + 0.5) / cols, (i // cols + 0.5) / math.ceil(n_shapes / cols)
            jitter = 0.08 if labels["picture_organization"] == 5 else 0.2
            fx, fy = gx + rng.uniform(-jitter, jitter), gy + rng.uniform(-jitter, jitter)
        else:
            fx, fy = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9)
        cx, cy = ox + fx * region_w, oy + fy * region_h
        size = unit * rng.uniform(0.9, 1.4) * (0.75 + 0.25 * spread)
        colour = palette[i % n_hues]
        if i in transformed:
            _burst(image, draw, rng, cx, cy, size, colour)
            shape_kinds["irregular"] += 1
        elif i % 2 == 0:
            draw.rectangle([cx - size, cy - size * 0.7, cx + size, cy + size * 0.7], fill=colour)
            shape_kinds["rectangle"] += 1
        else:
            draw.ellipse([cx - size, cy - size, cx + size, cy + size], fill=colour)
            shape_kinds["circle"] += 1
    return {
        "n_hues": n_hues,
        "hues": hues,
        "spread": spread,
        "corner": corner,
        "n_shapes": n_shapes,
        "shape_kinds": shape_kinds,
        "transformed_share": n_transformed / n_shapes,
    }


def _burst(image, draw, rng, cx: float, cy: float, size: float, colour) -> None:
    """A shape twisted into a spiky, sheared burst (points alternating long and short): a silhouette a
    14 px-patch encoder tells from a rectangle or circle. The first rule (3-6 random corners) often made
    convex blobs that looked like the untransformed shapes at 224 px."""
    k = int(rng.integers(5, 8))
    angle0, shear = rng.uniform(0, 2 * math.pi), rng.uniform(-0.5, 0.5)
    pts = []
    for j in range(2 * k):
        a = angle0 + math.pi * j / k
        r = size * (rng.uniform(1.2, 1.5) if j % 2 == 0 else rng.uniform(0.35, 0.5))
        px, py = r * math.cos(a), r * math.sin(a)
        pts.append((cx + px + shear * py, cy + py))
    draw.polygon(pts, fill=colour, outline=colour)
    hatch(image, pts)


def _strokes(draw, rng, line_texture: int, width: int, height: int, line_w: int) -> dict:
    """Ink strokes: line_texture (variety of styles)."""
    styles = list(_STROKE_STYLES[:line_texture])
    n_strokes = 3 + line_texture  # each added stroke kind also adds a stroke
    stroke_styles = styles + [styles[int(rng.integers(0, len(styles)))] for _ in range(n_strokes - len(styles))]
    rng.shuffle(stroke_styles)
    for style in stroke_styles:
        x0, y0 = rng.uniform(0.05, 0.95) * width, rng.uniform(0.05, 0.95) * height
        angle, length = rng.uniform(0, math.pi), rng.uniform(0.2, 0.35) * width
        x1 = float(np.clip(x0 + length * math.cos(angle), 5, width - 5))
        y1 = float(np.clip(y0 + length * math.sin(angle), 5, height - 5))
        draw_stroke(draw, rng, style, (x0, y0), (x1, y1), line_w)
    return {"styles": styles, "n_strokes": n_strokes}


def _line_web(draw, rng, line_combination: int, width: int, height: int, line_w: int) -> int:
    """Connected line web: line_combination (number of joined segments); the segment count."""
    n_segments = _SEGMENTS[line_combination]
    vertices = [(rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height)]
    for _ in range(n_segments):
        ax, ay = vertices[int(rng.integers(0, len(vertices)))]
        a, r = rng.uniform(0, 2 * math.pi), rng.uniform(0.08, 0.18) * width
        bx, by = float(np.clip(ax + r * math.cos(a), 4, width - 4)), float(np.clip(ay + r * math.sin(a), 4, height - 4))
        draw.line([(ax, ay), (bx, by)], fill=PENCIL, width=line_w + 7)  # ~5-6 px after letter-boxing (was ~2)
        vertices.append((bx, by))
    return n_segments


def describe(labels: dict[str, int], details: dict) -> str:
    """A plain, child-like description of what is drawn (used when a rubric puts descriptions in the prompt)."""
    parts = ["a person"]
    if details["n_motifs"]:
        parts.append(f"{details['n_motifs']} magic things in the sky")
    colours = "one colour" if details["n_hues"] == 1 else f"{details['n_hues']} colours"
    return f"I drew {' and '.join(parts)} with shapes in {colours} and {len(details['styles'])} kinds of lines."


def render_record(
    seed: int, width: int = 400, height: int = 300, distribution: str = "uniform"
) -> tuple[Image.Image, dict[str, int], int, str]:
    """Image, labels, grade and description for one seed (same image and labels as render_artwork)."""
    image, labels, grade, details = _render(seed, width, height, distribution)
    return image, labels, grade, describe(labels, details)


def _render(
    seed: int, width: int, height: int, distribution: str, shift=None
) -> tuple[Image.Image, dict[str, int], int, dict]:
    rng = np.random.default_rng([20251212, int(seed)])
    labels = _sample_labels(rng, distribution)
    grade = int(rng.choice(6, p=np.asarray(GRADE_COUNTS) / sum(GRADE_COUNTS))) + 1
    image, details = _draw(rng, labels, width, height, grade, shift, seed)
    return image, labels, grade, details


def render_drawing_details(seed: int, width: int = 400, height: int = 300) -> tuple[Image.Image, dict]:
    """An image and the facts of how it was drawn (colours, shapes, layout, figure, strokes, motifs).

    Used by the base's pre-training (train/vision_pretrain.py, train/captions.py), on seeds from a range
    no dataset uses; the facts are what a caption would say, never rubric labels.
    """
    rng = np.random.default_rng([20251212, int(seed)])
    labels = _sample_labels(rng, "uniform")
    grade = int(rng.choice(6, p=np.asarray(GRADE_COUNTS) / sum(GRADE_COUNTS))) + 1
    return _draw(rng, labels, width, height, grade)


def write_dataset(
    n: int,
    seed: int,
    out_dir: str | Path,
    distribution: str = "uniform",
    width: int = 400,
    height: int = 300,
    rubric: str = DEFAULT_RUBRIC,
    shift: str | None = None,
) -> Path:
    """Write n artworks to out_dir/images/ and out_dir/labels.csv; return the CSV path. `shift`: a named
    distribution shift of their appearance (train.synth_shift; the same labels and layouts as unshifted).

    Artwork i is drawn from seed `seed * 1_000_003 + i`, so datasets with different
    seeds do not share images. Columns: name, the rubric's dimensions (kidsartbench:
    the nine; creativity5: its five, read from the drawing parameters of CREATIVITY_FROM),
    grade, description (what is drawn, in words), comment (a teacher's reference comment
    from train.feedback_comments: strength and weakness from the labels).
    """
    if rubric not in RUBRIC_LABELS:
        raise ValueError(f"synthetic labels exist for rubrics {sorted(RUBRIC_LABELS)}, not {rubric!r}")
    columns = RUBRIC_LABELS[rubric]
    import csv

    from tqdm import tqdm

    from adapters.rubric import load_rubric
    from train.feedback_comments import reference_comment

    rubric_model = load_rubric(rubric)
    shifted = get_shift(shift)

    if n < 1:
        raise ValueError("n must be at least 1")
    out = Path(out_dir)
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    csv_path = out / "labels.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", *columns, "grade", "description", "comment"])
        for i in tqdm(range(n), desc="synth", unit="img", leave=False):
            image_seed = seed * 1_000_003 + i
            image, labels, grade, details = _render(image_seed, width, height, distribution, shifted)
            name = f"synth_{seed}_{i:05d}.png" if shifted is None else f"synth_{seed}_{shifted.name}_{i:05d}.png"
            image.save(images / name, format="PNG", compress_level=1)
            row_labels = {dim: labels[source] for dim, source in columns.items()}
            comment = reference_comment(image_seed, row_labels, details, rubric_model, columns)
            writer.writerow([name, *row_labels.values(), grade, describe(labels, details), comment])
    log.info("wrote %d synthetic artworks to %s", n, out)
    return csv_path

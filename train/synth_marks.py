"""The marks the synthetic drawings are made of (train.synth): ink strokes of five styles, the hatching of
a twisted shape, the stick figure (realism: its parts; deformation: its head's scale) and the fantastic
motifs. Each draws with the caller's random generator, in a fixed order of draws."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

INK = (35, 30, 40)
HEAD_SCALE = {1: 1.0, 2: 1.4, 3: 1.9, 4: 2.5, 5: 3.2}


def draw_stroke(draw: ImageDraw.ImageDraw, rng: np.random.Generator, style: str, start, end, width: int) -> None:
    (x0, y0), (x1, y1) = start, end
    length = max(1.0, math.hypot(x1 - x0, y1 - y0))
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    nx, ny = -uy, ux
    # Pattern periods of ~10 px (400 px page) stay ~6 px after the 224 px letter-box, so the
    # kinds remain distinguishable to a 14 px-patch vision encoder (at 6 px they blurred together).
    steps = max(2, int(length / 10))
    if style == "solid":
        draw.line([start, end], fill=INK, width=width)
    elif style == "dashed":
        for i in range(0, steps, 2):
            a, b = i / steps, min(1.0, (i + 1) / steps)
            draw.line(
                [(x0 + ux * length * a, y0 + uy * length * a), (x0 + ux * length * b, y0 + uy * length * b)],
                fill=INK,
                width=width + 1,
            )
    elif style == "zigzag":
        pts = [
            (
                x0 + ux * length * i / steps + nx * (9 if i % 2 else -9),
                y0 + uy * length * i / steps + ny * (9 if i % 2 else -9),
            )
            for i in range(steps + 1)
        ]
        draw.line(pts, fill=INK, width=width)
    elif style == "wavy":
        pts = [
            (
                x0 + ux * length * i / (steps * 3) + nx * 9 * math.sin(i / 1.5),
                y0 + uy * length * i / (steps * 3) + ny * 9 * math.sin(i / 1.5),
            )
            for i in range(steps * 3 + 1)
        ]
        draw.line(pts, fill=INK, width=width + 3)
    elif style == "dotted":
        for i in range(steps + 1):
            cx, cy = x0 + ux * length * i / steps, y0 + uy * length * i / steps
            r = width + 2
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=INK)


def hatch(image: Image.Image, polygon: list[tuple[float, float]]) -> None:
    """Ink hatching (diagonal, period 10 px) clipped to a polygon: the twisted shapes' texture.

    A spiky silhouette alone was read at 0.50 held-out Spearman: at ~18 px after
    letter-boxing a burst is about one 14 px patch, and its outline is a weak cue. A
    texture inside the shape is visible in every patch it covers.
    """
    xs, ys = [int(p[0]) for p in polygon], [int(p[1]) for p in polygon]
    box = (max(0, min(xs)), max(0, min(ys)), min(image.width, max(xs) + 1), min(image.height, max(ys) + 1))
    if box[2] <= box[0] or box[3] <= box[1]:
        return
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).polygon(polygon, fill=255)
    lines = Image.new("L", image.size, 0)
    pen = ImageDraw.Draw(lines)
    span = (box[2] - box[0]) + (box[3] - box[1])
    for offset in range(-span, span, 10):
        pen.line([(box[0] + offset, box[1]), (box[0] + offset + span, box[1] + span)], fill=255, width=3)
    clip = Image.fromarray(np.minimum(np.asarray(mask), np.asarray(lines)))
    image.paste(INK, (0, 0, image.width, image.height), clip)


def draw_figure(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    unit: float,
    realism: int,
    deformation: int,
    width: int,
) -> None:
    """A stick figure: realism adds parts, deformation distorts proportions."""
    head_r = unit * 0.35 * HEAD_SCALE[deformation]
    stretch = 1.0 + 0.35 * (deformation - 1) * rng.choice([-1, 1]) * 0.5
    body = unit * 1.1 * stretch
    skin = (236, 196, 160)
    draw.ellipse([cx - head_r, cy - head_r, cx + head_r, cy + head_r], fill=skin, outline=INK, width=width)
    if realism >= 2:
        draw.line([(cx, cy + head_r), (cx, cy + head_r + body)], fill=INK, width=width)
    if realism >= 3:
        arm_y = cy + head_r + body * 0.3
        arm = unit * 0.7 * (1 + 0.3 * (deformation - 1))
        draw.line([(cx - arm, arm_y + arm * 0.3), (cx, arm_y), (cx + arm, arm_y + arm * 0.3)], fill=INK, width=width)
        hip = cy + head_r + body
        leg = unit * 0.8 * stretch
        draw.line([(cx - leg * 0.5, hip + leg), (cx, hip), (cx + leg * 0.5, hip + leg)], fill=INK, width=width)
    if realism >= 4:
        e = head_r * 0.3
        eye = max(2.0, unit * 0.08)
        for sx in (-1, 1):
            draw.ellipse([cx + sx * e - eye, cy - e * 0.5 - eye, cx + sx * e + eye, cy - e * 0.5 + eye], fill=INK)
        draw.arc([cx - e, cy - e * 0.2, cx + e, cy + e], 20, 160, fill=INK, width=max(1, width - 1))
        arm_y = cy + head_r + body * 0.3
        arm = unit * 0.7 * (1 + 0.3 * (deformation - 1))
        hip = cy + head_r + body
        leg = unit * 0.8 * stretch
        for px, py in (
            (cx - arm, arm_y + arm * 0.3),
            (cx + arm, arm_y + arm * 0.3),
            (cx - leg * 0.5, hip + leg),
            (cx + leg * 0.5, hip + leg),
        ):
            hand = unit * 0.15
            draw.ellipse([px - hand, py - hand, px + hand, py + hand], fill=INK)
    if realism >= 5:
        hip = cy + head_r + body
        shirt = [
            (cx - unit * 0.3, cy + head_r + 2),
            (cx + unit * 0.3, cy + head_r + 2),
            (cx + unit * 0.35, hip),
            (cx - unit * 0.35, hip),
        ]
        draw.polygon(shirt, fill=(120, 120, 130), outline=INK)
        ground = hip + unit * 0.8 * stretch + 4
        draw.line([(cx - unit * 1.6, ground), (cx + unit * 1.6, ground)], fill=(90, 70, 50), width=width + 2)


def draw_motif(draw: ImageDraw.ImageDraw, rng: np.random.Generator, x: float, y: float, size: float, kind: int) -> None:
    colour = (70, 40, 110)
    if kind == 0:  # spiral
        pts = [(x + size * t / 12 * math.cos(t), y + size * t / 12 * math.sin(t)) for t in np.linspace(0, 12, 60)]
        draw.line(pts, fill=colour, width=5)
    elif kind == 1:  # star
        pts = []
        for i in range(10):
            r = size if i % 2 == 0 else size * 0.4
            a = i * math.pi / 5 - math.pi / 2
            pts.append((x + r * math.cos(a), y + r * math.sin(a)))
        draw.polygon(pts, outline=colour, fill=(250, 220, 60), width=3)
    else:  # floating eye
        draw.ellipse(
            [x - size, y - size * 0.55, x + size, y + size * 0.55], fill=(255, 255, 255), outline=colour, width=4
        )
        draw.ellipse([x - size * 0.35, y - size * 0.35, x + size * 0.35, y + size * 0.35], fill=colour)

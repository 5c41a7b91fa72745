"""Brief visual pre-training of a tiny random-init base, so it has visual features as a real base does.

On the purely random tiny base the last prompt token (where the score token is
predicted) barely depends on the image: LoRA adapters trained on it scored every
image alike. A real Qwen2.5-VL has learnt to see and to answer about pictures;
here the whole base (vision encoder and language model) gets a brief,
deterministic stand-in: from the final hidden state of the last prompt token, a
throw-away linear head regresses (a) ~48 generic pixel statistics (hue histogram
and number of hues, saturation and luminance contrast, ink and edge density, edge
orientations, a 4x4 layout of non-paper pixels, region counts) and (b) 14
caption-like attributes of each drawing from its generator (hues, colour
strength, stroke kinds, joined segments, motifs, figure parts, head scale, layout
spread, transformed shapes). The question asked with the picture is a generic one
or any shipped rubric's prompt, so the base learns to look at the picture whatever
it is asked. The targets are never rubric scores, but be aware that (b) are the
quantities the synthetic labels are made from. Images come from a seed range the
datasets never use (`PRETRAIN_SEED_OFFSET`).

Determinism: fixed seeds, one thread and a fixed number of steps; the same profile
gives the same weights on the same machine (checked by building twice).
"""
from __future__ import annotations

import logging
import time

import numpy as np

log = logging.getLogger(__name__)

PRETRAIN_SEED_OFFSET = 7_000_000_000
GENERIC_QUESTION = "Describe what you see in this drawing."
PAPER_GREY = np.array([128, 128, 128], dtype=float)


def _questions() -> list[str]:
    """Texts the pre-training asks with the picture: a generic question plus every shipped rubric's prompts."""
    from adapters.prompts import dimension_instruction
    from adapters.rubric import load_rubric, shipped_rubrics

    questions = [GENERIC_QUESTION]
    for name in shipped_rubrics():
        rubric = load_rubric(name)
        questions += [dimension_instruction(rubric, dim) for dim in rubric.dimensions]
    return questions


def pixel_statistics(image) -> np.ndarray:
    """Generic statistics of a normalised RGB image (a float vector, ~45 values)."""
    from scipy import ndimage

    rgb = np.asarray(image, dtype=float)
    hsv = np.asarray(image.convert("HSV"), dtype=float)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    lum = rgb @ np.array([0.299, 0.587, 0.114])
    letterbox = np.all(np.abs(rgb - PAPER_GREY) < 1.0, axis=-1)
    content = ~letterbox
    area = max(content.sum(), 1)
    paper = np.median(rgb[content], axis=0) if content.any() else np.array([245.0, 240, 230])
    colored = content & (s > 70) & (v > 60)
    hue_hist = np.histogram(h[colored], bins=12, range=(0, 256))[0] / area
    n_hues = float((hue_hist > 0.002).sum())
    ink = content & (v < 90)
    nonpaper = content & (np.abs(rgb - paper).sum(axis=-1) > 45)
    gy, gx = np.gradient(lum)
    mag = np.hypot(gx, gy) * content
    strong = mag > 40
    angles = np.arctan2(gy[strong], gx[strong]) % np.pi
    orient = np.histogram(angles, bins=4, range=(0, np.pi))[0] / area
    grid = []
    height, width = nonpaper.shape
    for i in range(4):
        for j in range(4):
            cell = nonpaper[i * height // 4 : (i + 1) * height // 4, j * width // 4 : (j + 1) * width // 4]
            grid.append(cell.mean())
    ys, xs = np.nonzero(nonpaper)
    if len(xs):
        centroid = [xs.mean() / width, ys.mean() / height, xs.std() / width, ys.std() / height]
    else:
        centroid = [0.5, 0.5, 0.0, 0.0]
    n_ink = ndimage.label(ink)[1]
    n_col = ndimage.label(colored)[1]
    contrast_col = float(np.abs(rgb[colored] - paper).sum(axis=-1).mean() / 255) if colored.any() else 0.0
    stats = [
        *np.sqrt(hue_hist),
        n_hues,
        colored.sum() / area,
        float(s[content].mean() / 255),
        float(s[colored].mean() / 255) if colored.any() else 0.0,
        contrast_col,
        float(lum[content].std() / 255),
        ink.sum() / area,
        nonpaper.sum() / area,
        strong.sum() / area,
        *np.sqrt(orient),
        *grid,
        *centroid,
        np.log1p(n_ink),
        np.log1p(n_col),
        float(np.abs(np.diff(lum, axis=1))[content[:, 1:]].mean() / 255),
    ]
    return np.asarray(stats, dtype=np.float32)


def pretrain_vision(model, processor, *, image_size: int, n_images: int, epochs: int, learning_rate: float, batch_size: int, seed: int, attribute_weight: float = 1.0) -> dict:
    """Train `model`'s vision encoder in place on pixel statistics; return a summary for the base manifest."""
    import torch

    from adapters.images import normalize_image
    from adapters.prompts import SYSTEM_PROMPT
    from train.synth import render_with_attributes

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed thread count keeps the float reductions, and so the weights, reproducible
    try:
        torch.manual_seed(seed)
        pixel_values, grids, targets = [], [], []
        for i in range(n_images):
            image, attributes = render_with_attributes(PRETRAIN_SEED_OFFSET + seed * 100_000 + i)
            image = normalize_image(image, image_size)
            if i == 0:
                first_image = image
            out = processor.image_processor(images=[image], return_tensors="pt")
            pixel_values.append(out["pixel_values"])
            grids.append(out["image_grid_thw"])
            targets.append(np.concatenate([pixel_statistics(image), np.asarray(attributes, dtype=np.float32)]))
            n_attributes = len(attributes)
        y = np.stack(targets)
        mean, std = y.mean(axis=0), y.std(axis=0) + 1e-6
        y = torch.from_numpy((y - mean) / std)
        column_weight = torch.ones(y.shape[1])
        column_weight[-n_attributes:] = attribute_weight
        column_weight = column_weight / column_weight.mean()
        # The whole model reads the picture the way it will be asked about it: a generic question
        # (not a rubric prompt) through the chat template, and a throw-away linear head on the
        # final hidden state of the last prompt token (where the score token is predicted).
        prompt_inputs = []
        for question in _questions():
            text = processor.apply_chat_template(
                [
                    {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                ],
                tokenize=False,
                add_generation_prompt=True,
            )
            encoded = processor(text=[text], images=[first_image], return_tensors="pt")
            prompt_inputs.append({k: v for k, v in encoded.items() if k not in ("pixel_values", "image_grid_thw")})
        head = torch.nn.Linear(model.config.text_config.hidden_size, y.shape[1])
        params = [p for p in model.parameters()] + list(head.parameters())
        for p in model.parameters():
            p.requires_grad_(True)
        optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
        rng = np.random.default_rng(seed)
        losses = []
        model.train()
        for epoch in range(epochs):
            order = rng.permutation(n_images)
            epoch_losses = []
            for begin in range(0, n_images, batch_size):
                idx = order[begin : begin + batch_size]
                text_inputs = prompt_inputs[int(rng.integers(len(prompt_inputs)))]
                inputs = {k: v.expand(len(idx), -1) for k, v in text_inputs.items()}
                inputs["pixel_values"] = torch.cat([pixel_values[i] for i in idx])
                inputs["image_grid_thw"] = torch.cat([grids[i] for i in idx])
                hidden = model.model(**inputs, use_cache=False).last_hidden_state[:, -1, :]
                loss = ((head(hidden) - y[idx]) ** 2 * column_weight).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                epoch_losses.append(float(loss.detach()))
            losses.append(round(float(np.mean(epoch_losses)), 4))
            log.info("visual pre-training epoch %d/%d: loss %.4f", epoch + 1, epochs, losses[-1])
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
    finally:
        torch.set_num_threads(threads)
    return {
        "what": "whole base (vision encoder and language model) trained to regress, from the final hidden state of the "
        "last prompt token, generic pixel statistics and caption-like drawing attributes of synthetic drawings (seed range "
        "no dataset uses), asked with a generic question or any shipped rubric prompt; targets are not rubric scores",
        "images": n_images,
        "image_seeds": f"{PRETRAIN_SEED_OFFSET + seed * 100_000}..{PRETRAIN_SEED_OFFSET + seed * 100_000 + n_images - 1}",
        "epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "seed": seed,
        "targets": int(y.shape[1]),
        "attribute_targets": n_attributes,
        "attribute_weight": attribute_weight,
        "loss_per_epoch": losses,
        "seconds": round(time.perf_counter() - start, 1),
    }

"""Stage 1 of the tiny base's pre-training: the vision tower learns what is drawn.

A real vision-language base does not start from a blind vision encoder: its
encoder (CLIP, SigLIP, a supervised ViT) was pre-trained on images first, and the
language model is then taught to put the encoder's output into words. The tiny
base does the same in two stages. This stage trains the vision tower alone (patch
embedding, blocks and merger) to predict the facts of each synthetic drawing (how
many colours and how strong, shapes and how many are twisted, layout and corner,
the figure's parts and head size, ink stroke kinds, pencil segments, motifs) from
its mean-pooled output tokens through a linear head, which is then thrown away.
The mean-pooled, linear read-out is deliberate: it is what a language model can
take from the image tokens with one attention pass, so the facts end up in a form
the next stage (train/pretrain.py, captions) and the rubric adapters can read.

Measured here (2 CPU threads): training the whole model on captions alone for
2200 steps (20 min) left a vision tower whose pooled output carried colour but
not the small parts (figure, motifs, pencil lines): a ridge probe of the nine
rubric labels read 0.29 mean Spearman; this stage reaches the figures recorded in
the base manifest (`pretraining.vision`).

The targets are drawing facts from `train.synth.render_drawing_details`, never
rubric labels, on seeds no dataset uses.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)

_STYLES = ("solid", "dashed", "zigzag", "wavy", "dotted")
FACT_NAMES = (
    "colours",
    "strength",
    "shapes",
    "twisted_share",
    "spread",
    "grid",
    "figure_parts",
    "head_scale",
    "stroke_kinds",
    "strokes",
    "pencil_segments",
    "motifs",
    *(f"stroke_{s}" for s in _STYLES),
    "spirals",
    "stars",
    "eyes",
    *(f"corner_{c}" for c in range(4)),
)


def fact_targets(details: dict) -> list[float]:
    """The drawing's facts as numbers, in FACT_NAMES order."""
    kinds = details["motif_kinds"]
    return [
        details["n_hues"],
        details["strength"],
        details["n_shapes"],
        details["transformed_share"],
        details["spread"],
        float(details["grid"]),
        details["figure_parts"],
        details["head_scale"],
        len(details["styles"]),
        details["n_strokes"],
        details["n_segments"],
        details["n_motifs"],
        *(float(s in details["styles"]) for s in _STYLES),
        *(float(kinds.count(k)) for k in range(3)),
        *(float(details["corner"] == c) for c in range(4)),
    ]


def cosine_lr(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak (both pre-training stages)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def optimise(spec, n_items: int, rng, params, optimizer, batch_loss, stage: str) -> list[dict]:
    """The optimiser loop both pre-training stages share; returns the loss curve (mean of every 50 steps).

    Each step draws the next `spec.batch_size` items of a seeded permutation (a new one when the
    epoch runs out), takes `batch_loss(indices)`, clips gradients to norm 1 and sets the cosine rate.
    """
    import torch
    from tqdm import tqdm

    order, cursor, losses, curve = rng.permutation(n_items), 0, [], []
    bar = tqdm(range(spec.steps), desc=f"{stage} pre-training", unit="step")
    for step in bar:
        if cursor + spec.batch_size > len(order):
            order, cursor = rng.permutation(n_items), 0
        idx = order[cursor : cursor + spec.batch_size]
        cursor += spec.batch_size
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, spec.steps, spec.learning_rate, spec.warmup_steps)
        optimizer.step()
        losses.append(float(loss.detach()))
        if (step + 1) % 50 == 0 or step + 1 == spec.steps:
            curve.append({"step": step + 1, "loss": round(float(np.mean(losses[-50:])), 4)})
            bar.set_postfix(loss=curve[-1]["loss"])
            log.info("%s pre-training step %d/%d: loss %.4f", stage, step + 1, spec.steps, curve[-1]["loss"])
    return curve


def _pooled(visual, pixels, grid, n: int):
    out = visual(pixels, grid_thw=grid)
    tokens = out.pooler_output if hasattr(out, "pooler_output") else out
    return tokens.view(n, -1, tokens.shape[-1]).mean(1)


def pretrain_vision(model, pixels: list, grid, details: list[dict], spec, *, seed: int) -> dict:
    """Train `model`'s vision tower in place on drawing facts; return the summary for the base manifest.

    `pixels` holds one image's processed pixel values per drawing (all on one patch grid `grid`).
    """
    import torch

    start = time.perf_counter()
    torch.manual_seed(seed)
    visual = model.model.visual
    targets = torch.tensor([fact_targets(d) for d in details], dtype=torch.float32)
    mean, std = targets.mean(0), targets.std(0).clamp_min(1e-6)
    normalised = (targets - mean) / std
    head = torch.nn.Linear(model.config.text_config.hidden_size, targets.shape[1])
    params = [*visual.parameters(), *head.parameters()]
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay, betas=(0.9, 0.98))

    def batch_loss(idx):
        pooled = _pooled(visual, torch.cat([pixels[i] for i in idx]), grid.repeat(len(idx), 1), len(idx))
        return torch.nn.functional.mse_loss(head(pooled), normalised[idx])

    visual.train()
    curve = optimise(spec, len(pixels), np.random.default_rng(seed), params, optimizer, batch_loss, "vision")
    visual.eval()
    for p in params:
        p.requires_grad_(False)
    return {
        "what": "the vision tower alone (patch embedding, blocks, merger) predicts the drawing's facts "
        f"({', '.join(FACT_NAMES)}; standardised, mean squared error) from its mean-pooled output tokens through "
        "a linear head that is then discarded",
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "loss_curve": curve,
        "seconds": round(time.perf_counter() - start, 1),
    }


PROBE_SEED_OFFSET = 7_800_000_000
PROBE_TRAIN, PROBE_TEST = 600, 200


def probe_rubric_labels(model, processor, image_size: int, seed: int) -> dict[str, float]:
    """Does the vision tower see the rubric's synthetic rules? Held-out Spearman of a ridge read-out.

    A measurement only (the labels never train the base): features are the mean of
    the vision tower's output tokens for labelled synthetic drawings from a seed
    range no dataset uses; a ridge regression (standardised features, lambda 30)
    fitted on 600 drawings predicts each rubric label of 200 others.
    """
    from scipy.stats import spearmanr

    from adapters.images import normalize_image
    from train.encoded import frozen_image_tokens
    from train.synth import DIMENSIONS, render_record

    first = PROBE_SEED_OFFSET + seed * 1_000_000
    features, labels = [], []
    for begin in range(first, first + PROBE_TRAIN + PROBE_TEST, 32):
        images = []
        for s in range(begin, min(begin + 32, first + PROBE_TRAIN + PROBE_TEST)):
            image, record_labels, _, _ = render_record(s)
            images.append(normalize_image(image, image_size))
            labels.append([record_labels[d] for d in DIMENSIONS])
        out = processor.image_processor(images=images, return_tensors="pt")
        tokens = frozen_image_tokens(model, out["pixel_values"], out["image_grid_thw"])
        features.extend(t.mean(0).double().numpy() for t in tokens)
    x, y = np.asarray(features), np.asarray(labels, dtype=float)
    mean, std = x[:PROBE_TRAIN].mean(0), x[:PROBE_TRAIN].std(0) + 1e-6
    x = np.c_[(x - mean) / std, np.ones(len(x))]
    a = x[:PROBE_TRAIN]
    weights = np.linalg.solve(a.T @ a + 30.0 * np.eye(a.shape[1]), a.T @ y[:PROBE_TRAIN])
    predicted = x[PROBE_TRAIN:] @ weights
    rhos = {d: round(float(spearmanr(predicted[:, j], y[PROBE_TRAIN:, j])[0]), 3) for j, d in enumerate(DIMENSIONS)}
    rhos["mean"] = round(float(np.mean(list(rhos.values()))), 3)
    log.info("vision probe (held-out Spearman of a ridge read-out): %s", rhos)
    return rhos

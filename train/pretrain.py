"""Pre-training of the tiny test base, in two stages, as vision-language bases are made.

Stage 1 (`train.vision_pretrain`): the vision tower alone learns the facts of
synthetic drawings, as a real VLM's vision encoder is pre-trained before it meets
a language model. Stage 2 (here): with the vision tower frozen, the language
model learns next-token prediction on image-text pairs in the chat layout the
adapters later see (system text, the question, then the image, then the
assistant's answer), with cross-entropy on the answer tokens only, so it learns
to put what the vision tower sees into words. The answers are captions, lists of
facts or one-fact answers from `train.captions`; they never name a rubric
dimension or a score. Drawings come from seeds no dataset uses
(`PRETRAIN_SEED_OFFSET`). The frozen tower's output tokens are computed once per
drawing and passed as `mm_encoder_outputs` (as in adapter training).

Determinism: fixed seeds, a fixed thread count and a fixed number of steps; on
the same CPU the same recipe gives the same weights (`kidsart build-base --check`
verifies it). Across CPUs the float results differ, which is why the base is a
committed fixture.
"""

from __future__ import annotations

import copy
import logging
import time

import numpy as np

from train.encoded import answer_only_inputs, expand_image_tokens

log = logging.getLogger(__name__)

PRETRAIN_SEED_OFFSET = 7_000_000_000
HELD_OUT_SEED_OFFSET = 7_500_000_000


class DrawingSet:
    """Pre-training drawings rendered once: processed pixel values, one patch grid, and the facts of each."""

    def __init__(self, processor, image_size: int, seeds: range, desc: str):
        import torch
        from tqdm import tqdm

        from adapters.images import normalize_image
        from train.synth import render_drawing_details

        self.pixels, self.details = [], []
        grids = []
        for seed in tqdm(seeds, desc=desc, unit="img", leave=False):
            image, details = render_drawing_details(seed)
            out = processor.image_processor(images=[normalize_image(image, image_size)], return_tensors="pt")
            self.pixels.append(out["pixel_values"])
            grids.append(out["image_grid_thw"])
            self.details.append(details)
        self.grid = grids[0]
        if any(not torch.equal(g, self.grid) for g in grids):
            raise ValueError("pre-training drawings do not share one patch grid")

    def __len__(self) -> int:
        return len(self.details)

    def features(self, model, batch_size: int = 32) -> list:
        """The (frozen) vision tower's output tokens per drawing."""
        import torch

        from train.encoded import frozen_image_tokens

        out = []
        for begin in range(0, len(self), batch_size):
            chunk = self.pixels[begin : begin + batch_size]
            out.extend(frozen_image_tokens(model, torch.cat(chunk), self.grid.repeat(len(chunk), 1)))
        return out


class CaptionBatches:
    """Tokenised, label-masked image-text batches over cached vision features (the vision tower is frozen)."""

    def __init__(self, processor, drawings: DrawingSet, features: list, prompt_format):
        self.processor, self.prompt_format = processor, prompt_format
        self.drawings, self.features, self.details = drawings, features, drawings.details
        # The processor expands each image placeholder to one token per merged patch; so do we.
        self.image_tokens = int(drawings.grid.prod()) // processor.image_processor.merge_size**2

    def __len__(self) -> int:
        return len(self.features)

    def prompt(self, question: str) -> str:
        messages = self.prompt_format.messages(self.prompt_format.user_content(question, {"type": "image"}))
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return expand_image_tokens(text, self.image_tokens)

    def batch(self, indices, pairs):
        """Model inputs with `labels` set on the answer tokens (and the closing <|im_end|>) only."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        inputs = answer_only_inputs(self.processor.tokenizer, [self.prompt(q) for q, _ in pairs], [a for _, a in pairs])
        return {
            **inputs,
            "image_grid_thw": self.drawings.grid.repeat(len(indices), 1),
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithPooling(pooler_output=tuple(self.features[i] for i in indices))
            },
        }


def held_out_loss(model, data: CaptionBatches, batch_size: int = 16) -> dict[str, float]:
    """Mean answer-token loss per fact on held-out drawings (short answers to focused questions) and on captions."""
    import torch

    from train.captions import FACT_QUESTIONS, SHORT_FACTS, caption

    model.eval()
    out: dict[str, float] = {}
    with torch.no_grad():
        for name in [*SHORT_FACTS, "caption"]:
            rng = np.random.default_rng(12345)
            losses = []
            for begin in range(0, len(data), batch_size):
                idx = list(range(begin, min(begin + batch_size, len(data))))
                if name == "caption":
                    pairs = [("Describe this drawing.", caption(rng, data.details[i])) for i in idx]
                else:
                    pairs = [(FACT_QUESTIONS[name][0], SHORT_FACTS[name](rng, data.details[i])) for i in idx]
                losses.append(float(model(**data.batch(idx, pairs), use_cache=False).loss))
            out[name] = round(float(np.mean(losses)), 4)
    model.train()
    return out


def pretrain_base(model, processor, spec, *, image_size: int, seed: int) -> dict:
    """Both pre-training stages on `model`, in place; return the summary recorded in the base manifest."""
    import torch

    from train.vision_pretrain import pretrain_vision, probe_rubric_labels

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    # Batching sets padding state on the tokenizer; work on a copy so the saved tokenizer is the recipe's.
    processor = copy.deepcopy(processor)
    try:
        torch.manual_seed(seed)
        first = PRETRAIN_SEED_OFFSET + seed * 1_000_000
        drawings = DrawingSet(
            processor, image_size, range(first, first + spec.n_images), "render pre-training drawings"
        )
        held_first = HELD_OUT_SEED_OFFSET + seed * 1_000_000
        held = (
            DrawingSet(
                processor, image_size, range(held_first, held_first + spec.eval_images), "render held-out drawings"
            )
            if spec.eval_images
            else None
        )
        probe_before = probe_rubric_labels(model, processor, image_size, seed)
        vision = pretrain_vision(model, drawings.pixels, drawings.grid, drawings.details, spec.vision, seed=seed)
        vision["probe_before"], vision["probe_after"] = (
            probe_before,
            probe_rubric_labels(model, processor, image_size, seed),
        )
        # The vision tower is frozen from here on: its output tokens, computed once, replace the pixels.
        features = drawings.features(model)
        drawings.pixels = []
        captions = pretrain_captions(model, processor, drawings, features, held, spec.captions, seed=seed)
    finally:
        torch.set_num_threads(threads)
    return {
        "images": spec.n_images,
        "image_seeds": f"{first}..{first + spec.n_images - 1}",
        "held_out_seeds": f"{held_first}..{held_first + spec.eval_images - 1}" if held else None,
        "seed": seed,
        "threads": spec.num_threads,
        "vision": vision,
        "captions": captions,
        "seconds": round(time.perf_counter() - start, 1),
    }


def pretrain_captions(
    model, processor, drawings: DrawingSet, features: list, held: DrawingSet | None, spec, *, seed: int
) -> dict:
    """Stage 2: the language model learns to answer questions about drawings (vision tower frozen)."""
    import torch

    from adapters.prompts import load_prompt_format
    from train.captions import training_pair
    from train.vision_pretrain import optimise

    start = time.perf_counter()
    # The base learns this project's prompt format (system text, question, then the image).
    prompt_format = load_prompt_format("kidsart")
    data = CaptionBatches(processor, drawings, features, prompt_format)
    held_data = CaptionBatches(processor, held, held.features(model), prompt_format) if held else None
    before = held_out_loss(model, held_data) if held_data else None
    params = [p for name, p in model.named_parameters() if ".visual." not in f".{name}"]
    for p in params:
        p.requires_grad_(True)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.learning_rate,
        betas=(0.9, 0.98),
    )
    rng = np.random.default_rng(seed)

    def batch_loss(idx):
        idx = idx.tolist()
        pairs = [
            training_pair(rng, data.details[i], spec.focused_share, spec.dense_share, spec.short_share) for i in idx
        ]
        return model(**data.batch(idx, pairs), use_cache=False).loss

    model.train()
    curve = optimise(spec, len(data), rng, params, optimizer, batch_loss, "caption")
    model.eval()
    for p in params:
        p.requires_grad_(False)
    after = held_out_loss(model, held_data) if held_data else None
    return {
        "what": "next-token prediction (cross-entropy on answer tokens only) on image-text pairs in the adapters' chat "
        "layout: a question, then the image, then a caption, the list of facts or a one-fact answer about the "
        "drawing (colours, contrast with the paper, shapes, layout, figure, head size, strokes, pencil lines, "
        "motifs); the language model trained, the vision tower frozen; texts never name a rubric dimension or a score",
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "loss_curve": curve,
        "held_out_loss_before": before,
        "held_out_loss_after": after,
        "seconds": round(time.perf_counter() - start, 1),
    }

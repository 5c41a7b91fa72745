"""Image-text pre-training of the tiny test base: next-token prediction on captions of drawings.

Real vision-language bases learn to put what the vision tower sees into words
from image-text pairs; a rubric adapter then only has to steer that knowledge.
The tiny base gets the same, briefly: each step takes a batch of synthetic
drawings (seeds no dataset uses, `PRETRAIN_SEED_OFFSET`), asks about each one
in the chat layout the adapters later see (system text, the question, then the
image, then the assistant's answer) and trains the whole model (vision tower and
language model) with cross-entropy on the answer tokens only. The answers are
captions or single facts from `train.captions`; they never name a rubric
dimension or a score.

Determinism: fixed seeds, a fixed thread count and a fixed number of steps; on
the same CPU the same recipe gives the same weights (`kidsart build-base --check`
verifies it). Across CPUs the float results differ, which is why the base is a
committed fixture.
"""
from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np

log = logging.getLogger(__name__)

PRETRAIN_SEED_OFFSET = 7_000_000_000
HELD_OUT_SEED_OFFSET = 7_500_000_000
IGNORE = -100


class CaptionBatches:
    """Renders the pre-training drawings once and builds tokenised, label-masked batches."""

    def __init__(self, processor, image_size: int, seeds: range, system_prompt: str):
        from tqdm import tqdm

        from adapters.images import normalize_image
        from train.synth import render_drawing_details

        self.processor, self.system_prompt = processor, system_prompt
        self.images, self.details = [], []
        for seed in tqdm(seeds, desc="render pre-training drawings", unit="img", leave=False):
            image, details = render_drawing_details(seed)
            self.images.append(normalize_image(image, image_size))
            self.details.append(details)
        tokenizer = processor.tokenizer
        self.im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
        self.header_len = len(tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False))
        self.end = "<|im_end|>"

    def __len__(self) -> int:
        return len(self.images)

    def prompt(self, question: str) -> str:
        from adapters.prompts import user_turn

        messages = [
            {"role": "system", "content": [{"type": "text", "text": self.system_prompt}]},
            {"role": "user", "content": user_turn(question, {"type": "image"})},
        ]
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def batch(self, indices, pairs):
        """Model inputs with `labels` set on the answer tokens (and the closing <|im_end|>) only."""
        import torch

        texts = [self.prompt(q) + a + self.end for q, a in pairs]
        self.processor.tokenizer.padding_side = "right"
        inputs = self.processor(text=texts, images=[self.images[i] for i in indices], return_tensors="pt", padding=True)
        ids = inputs["input_ids"]
        labels = torch.full_like(ids, IGNORE)
        for row in range(ids.shape[0]):
            starts = (ids[row] == self.im_start).nonzero().flatten()
            answer_from = int(starts[-1]) + self.header_len
            mask = inputs["attention_mask"][row].bool()
            labels[row, answer_from:] = ids[row, answer_from:]
            labels[row, ~mask] = IGNORE
        inputs["labels"] = labels
        return inputs


def _lr(step: int, spec) -> float:
    if step < spec.warmup_steps:
        return spec.learning_rate * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.learning_rate * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


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


def pretrain_captions(model, processor, spec, *, image_size: int, seed: int) -> dict:
    """Train `model` in place on image-text pairs; return the summary recorded in the base manifest."""
    import torch
    from tqdm import tqdm

    from adapters.prompts import SYSTEM_PROMPT
    from train.captions import training_pair

    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.num_threads)
    # Batching sets padding state on the tokenizer; work on a copy so the saved tokenizer is the recipe's.
    processor = copy.deepcopy(processor)
    try:
        torch.manual_seed(seed)
        first = PRETRAIN_SEED_OFFSET + seed * 1_000_000
        data = CaptionBatches(processor, image_size, range(first, first + spec.n_images), SYSTEM_PROMPT)
        held_first = HELD_OUT_SEED_OFFSET + seed * 1_000_000
        held = CaptionBatches(processor, image_size, range(held_first, held_first + spec.eval_images), SYSTEM_PROMPT) if spec.eval_images else None
        before = held_out_loss(model, held) if held else None
        params = [p for p in model.parameters()]
        for p in params:
            p.requires_grad_(True)
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=spec.learning_rate, betas=(0.9, 0.98),
        )
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(data))
        cursor, losses, curve = 0, [], []
        model.train()
        bar = tqdm(range(spec.steps), desc="caption pre-training", unit="step")
        for step in bar:
            if cursor + spec.batch_size > len(order):
                order, cursor = rng.permutation(len(data)), 0
            idx = order[cursor : cursor + spec.batch_size].tolist()
            cursor += spec.batch_size
            pairs = [training_pair(rng, data.details[i], spec.focused_share, spec.dense_share, spec.short_share) for i in idx]
            loss = model(**data.batch(idx, pairs), use_cache=False).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for group in optimizer.param_groups:
                group["lr"] = _lr(step, spec)
            optimizer.step()
            losses.append(float(loss.detach()))
            if (step + 1) % 50 == 0 or step + 1 == spec.steps:
                curve.append({"step": step + 1, "loss": round(float(np.mean(losses[-50:])), 4)})
                bar.set_postfix(loss=curve[-1]["loss"])
                log.info("caption pre-training step %d/%d: loss %.4f", step + 1, spec.steps, curve[-1]["loss"])
        model.eval()
        for p in params:
            p.requires_grad_(False)
        after = held_out_loss(model, held) if held else None
    finally:
        torch.set_num_threads(threads)
    return {
        "what": "next-token prediction (cross-entropy on answer tokens only) on image-text pairs in the adapters' chat "
        "layout: a question, then the image, then a caption or a one-fact answer about the drawing (colours, "
        "contrast with the paper, shapes, layout, figure, head size, strokes, pencil lines, motifs); whole model "
        "trained; texts never name a rubric dimension or a score",
        "images": spec.n_images,
        "image_seeds": f"{first}..{first + spec.n_images - 1}",
        "held_out_seeds": f"{held_first}..{held_first + spec.eval_images - 1}" if held else None,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "learning_rate": spec.learning_rate,
        "seed": seed,
        "threads": spec.num_threads,
        "loss_curve": curve,
        "held_out_loss_before": before,
        "held_out_loss_after": after,
        "seconds": round(time.perf_counter() - start, 1),
    }

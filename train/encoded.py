"""Training inputs, encoded once per run: prompt tokens per (dimension, description), vision features per image.

LoRA adapters here touch only the language model (the PEFT targets match nothing
in the vision tower), so the vision tower is frozen during adapter training and
its output for an image never changes. It is computed once per image with the
base and handed to the model as `mm_encoder_outputs` (transformers' own argument
for precomputed encoder outputs) instead of pixel values: same logits (tested to
1e-5 against the processor's pixel path), and a vision pass per image per run
instead of one per image per step and dimension.

Prompts are built exactly as serving builds them (`adapters.hf_scoring`: the
rubric's chat messages through the base's chat template) and collated with left
padding like the processor's own batching.
"""

from __future__ import annotations

import logging
from typing import Any

from adapters.errors import ConfigError

log = logging.getLogger(__name__)

IGNORE = -100  # label of tokens the loss skips
END_OF_TURN = "<|im_end|>"


def expand_image_tokens(prompt: str, n_tokens: int) -> str:
    """A chat-template prompt, its image placeholder expanded to one token per merged patch as the processor does."""
    return prompt.replace("<|image_pad|>", "<|image_pad|>" * n_tokens)


def answer_only_inputs(
    tokenizer,
    prompts: list[str],
    answers: list[str],
    *,
    weighted_spans: list[list[tuple[int, int]]] | None = None,
    span_weight: float = 1.0,
) -> dict:
    """input_ids, attention_mask and labels for prompt + answer + end-of-turn, right-padded, with the loss on
    the answer tokens and the closing end-of-turn only (supervised fine-tuning; the prompt is context).

    With `weighted_spans` (character spans inside each answer), also `in_span` (answer tokens overlapping a
    span) and `weights`: 1 per answer token, `span_weight` per token in a span, 0 where labels are ignored.
    Shared by the base's caption pre-training and the feedback adapter's training.
    """
    import torch

    tokenizer.padding_side = "right"
    texts = [p + a + END_OF_TURN for p, a in zip(prompts, answers, strict=True)]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, return_offsets_mapping=weighted_spans is not None)
    im_start = tokenizer.convert_tokens_to_ids("<|im_start|>")
    header_len = len(tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False))
    ids = inputs["input_ids"]
    labels = torch.full_like(ids, IGNORE)
    for row in range(ids.shape[0]):
        starts = (ids[row] == im_start).nonzero().flatten()
        answer_from = int(starts[-1]) + header_len
        mask = inputs["attention_mask"][row].bool()
        labels[row, answer_from:] = ids[row, answer_from:]
        labels[row, ~mask] = IGNORE
    out = {"input_ids": ids, "attention_mask": inputs["attention_mask"], "labels": labels}
    if weighted_spans is not None:
        in_span = torch.zeros_like(ids, dtype=torch.bool)
        offsets = inputs["offset_mapping"]
        for row, spans in enumerate(weighted_spans):
            shift = len(prompts[row])
            for start, end in spans:
                in_span[row] |= (offsets[row, :, 0] < shift + end) & (offsets[row, :, 1] > shift + start)
        in_span &= labels != IGNORE
        out["in_span"] = in_span
        out["weights"] = (labels != IGNORE).float() + (span_weight - 1.0) * in_span.float()
    return out


def frozen_image_tokens(model, pixel_values, grid_thw) -> list:
    """The frozen vision tower's output tokens, one tensor per image, for a batch of processed pixels.

    The one place that runs the vision tower without gradients: adapter training (below), the base's
    caption stage and its vision probe (train/pretrain.py, train/vision_pretrain.py) all cache these.
    """
    import torch

    with torch.no_grad():
        out = model.model.get_image_features(pixel_values, grid_thw, return_dict=True)
    return [t.detach().clone() for t in out.pooler_output]


class EncodedData:
    """Per-run cache: vision features per image and encoded prompts per (dimension, description)."""

    def __init__(self, scoring, rubric, samples, image_size: int, base_model, *, batch_size: int = 32):
        import torch
        from PIL import Image
        from tqdm import tqdm

        self.scoring, self.rubric, self.samples = scoring, rubric, samples
        self.features: list = []
        self.grids: list = []
        self._first_image = None
        image_processor = scoring.processor.image_processor
        pending_pixels, pending_grids = [], []

        def flush() -> None:
            if not pending_pixels:
                return
            self.features.extend(frozen_image_tokens(base_model, torch.cat(pending_pixels), torch.cat(pending_grids)))
            self.grids.extend(pending_grids)
            pending_pixels.clear()
            pending_grids.clear()

        for sample in tqdm(samples, desc="encode images", unit="img", leave=False):
            with Image.open(sample.image_path) as img:
                image = scoring.prepare(img)
            if self._first_image is None:
                self._first_image = image
            out = image_processor(images=[image], return_tensors="pt")
            pending_pixels.append(out["pixel_values"])
            pending_grids.append(out["image_grid_thw"])
            if len(pending_pixels) >= batch_size:
                flush()
        flush()
        self._grid = self.grids[0] if self.grids else None
        if any(not torch.equal(g, self._grid) for g in self.grids):
            raise ConfigError("images do not share one patch grid after letter-boxing; check image_size")
        self._text: dict[tuple[str, str | None], dict] = {}
        self.pad_id = scoring.processor.tokenizer.pad_token_id

    def text(self, dimension, description: str | None) -> dict:
        key = (dimension.name, description if self.rubric.uses_description else None)
        if key not in self._text:
            enc = self.scoring.batch_inputs(self.rubric, dimension, [self._first_image], [key[1]])
            self._text[key] = {k: v[0] for k, v in enc.items() if k not in ("pixel_values", "image_grid_thw")}
        return self._text[key]

    def collate(self, items: list[tuple[int, Any]]):
        """Model inputs for [(sample index, Dimension)], left-padded like the processor, with cached vision features."""
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        texts = [self.text(dim, self.samples[i].description) for i, dim in items]
        width = max(int(t["input_ids"].shape[0]) for t in texts)
        batch: dict = {}
        for key in texts[0]:
            pad = self.pad_id if key == "input_ids" else 0
            rows = []
            for t in texts:
                value = t[key]
                missing = width - value.shape[0]
                rows.append(torch.cat([torch.full((missing,), pad, dtype=value.dtype), value]) if missing else value)
            batch[key] = torch.stack(rows)
        batch["image_grid_thw"] = torch.cat([self.grids[i] for i, _ in items])
        batch["mm_encoder_outputs"] = {
            "image": BaseModelOutputWithPooling(pooler_output=tuple(self.features[i] for i, _ in items))
        }
        return batch

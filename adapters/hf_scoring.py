"""Score-token logits and feedback comments from a transformers Qwen2.5-VL (+ PEFT) model.

Shared by the reference backend (serving's correctness oracle) and the RAFT
trainer, so both build inputs exactly as vLLM does: the same chat messages (from
the deployment's prompt format), the chat template from the base's processor, and
images prepared by the format's recipe passed to the base's image processor.
Heavy imports happen on first use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.feedback import FeedbackSettings, feedback_messages
from adapters.prompts import PromptFormat
from adapters.rubric import Dimension, Rubric
from adapters.score_tokens import score_token_ids as lookup_score_token_ids


@dataclass
class ScoringProcessor:
    """The base's processor, the prompt format and the ids of the rubric's score tokens."""

    processor: object
    score_token_ids: list[int]
    prompt_format: PromptFormat
    image_size: int

    @classmethod
    def load(cls, base_dir: Path, rubric: Rubric, image_size: int, prompt_format: PromptFormat) -> ScoringProcessor:
        from transformers import AutoProcessor

        pixels = image_size * image_size
        processor = AutoProcessor.from_pretrained(base_dir, size={"shortest_edge": pixels, "longest_edge": pixels})
        tokenizer = processor.tokenizer
        ids = lookup_score_token_ids(tokenizer, rubric.score_tokens, f"the tokenizer of {base_dir}")
        tokenizer.padding_side = "left"
        return cls(processor=processor, score_token_ids=ids, prompt_format=prompt_format, image_size=image_size)

    def prepare(self, image):
        """A decoded PIL image as the model's input, by the prompt format's image recipe."""
        from adapters.images import prepare_image

        return prepare_image(image, self.image_size, self.prompt_format.image_recipe)

    def prompt_text(self, rubric: Rubric, dimension: Dimension, description: str | None = None) -> str:
        messages = self.prompt_format.chat_messages(rubric, dimension, {"type": "image"}, description)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def batch_inputs(
        self, rubric: Rubric, dimension: Dimension, images: Sequence, descriptions: Sequence[str | None] | None = None
    ):
        """Model inputs for a batch of already-prepared PIL images (`prepare`), left-padded."""
        descriptions = descriptions or [None] * len(images)
        texts = [self.prompt_text(rubric, dimension, d) for d in descriptions]
        return self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)

    def feedback_prompt_text(self, rubric: Rubric, scores: dict[str, float], description: str | None = None) -> str:
        """The feedback adapter's prompt (chat template applied), as the router sends it to vLLM."""
        messages = feedback_messages(self.prompt_format, rubric, scores, {"type": "image"}, description)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def feedback_inputs(
        self,
        rubric: Rubric,
        scores: Sequence[dict[str, float]],
        images: Sequence,
        descriptions: Sequence[str | None] | None = None,
    ):
        """Model inputs for a batch of feedback prompts (one scores dict and prepared image each), left-padded."""
        descriptions = descriptions or [None] * len(images)
        texts = [self.feedback_prompt_text(rubric, s, d) for s, d in zip(scores, descriptions, strict=True)]
        self.processor.tokenizer.padding_side = "left"
        return self.processor(text=texts, images=list(images), return_tensors="pt", padding=True)


def generate_text(model, processor, inputs, settings: FeedbackSettings) -> list[str]:
    """Generated answers for left-padded `inputs`, bounded by `settings` (greedy when temperature is 0)."""
    sample = settings.temperature > 0
    out = model.generate(
        **inputs,
        max_new_tokens=settings.max_tokens,
        do_sample=sample,
        temperature=settings.temperature if sample else None,
        top_p=settings.top_p if sample else None,
        top_k=None,
        repetition_penalty=settings.repetition_penalty,
    )
    new_tokens = out[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]


def score_token_logits(model, inputs, score_token_ids: list[int]):
    """Logits of the score tokens at the next-token position: shape (batch, levels)."""
    outputs = model(**inputs, use_cache=False, logits_to_keep=1)
    return outputs.logits[:, -1, :][:, score_token_ids]

"""Prompts as token ids: each dimension's fixed prefix tokenised once, only what varies per request.

The engine replica (`serve.engine_server`) hands vLLM token ids and pixels instead of chat
messages with a data URL, so no chat template is rendered and no fixed text is tokenised per
request. The ids are exactly what the chat template gives for the same messages
(`PromptFormat.chat_messages` / `adapters.feedback.feedback_messages` with an image part),
unexpanded: one image placeholder token, which vLLM's multimodal processor replaces by the
image's patch tokens, as it does for a rendered prompt.

How: the template is rendered once per dimension with a sentinel in place of the artwork's
description, and the text is cut at the image placeholder. Both cuts sit on special tokens
(`<|vision_start|>`, `<|image_pad|>`, `<|vision_end|>`), which a BPE tokenizer never merges
across, so tokenising the pieces apart gives the ids of tokenising the whole.
- before the image: tokenised at start-up (the `kidsart` format puts all fixed text here);
- after the image: tokenised at start-up when there is no description; with a description,
  the text around the sentinel is kept and only `before + description + after` is tokenised.
The feedback prompt carries the predicted scores in its instruction: it is rendered and
tokenised per request (one request per image, beside nine scoring requests).
`tests/test_prompt_tokens.py` checks the ids against the rendered template for both shipped
formats, with and without a description, and for the feedback prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from adapters.errors import ConfigError
from adapters.feedback import feedback_messages
from adapters.prompts import PromptFormat
from adapters.rubric import Rubric

IMAGE_TOKEN = "<|image_pad|>"
_SENTINEL = "\ue000KIDSART-DESCRIPTION\ue001"  # private-use characters: never in a rubric's text


@dataclass(frozen=True)
class _DimensionPrompt:
    before_image: tuple[int, ...]
    after_image: tuple[int, ...]  # without a description
    description_cut: tuple[str, str] | None  # the text after the image around the description, if the format has one


class PromptTokens:
    """Token ids of every dimension's prompt (and the feedback prompt) for one tokenizer and prompt format."""

    def __init__(self, tokenizer, prompt_format: PromptFormat, rubric: Rubric, dimensions: list[str] | None = None):
        self.tokenizer = tokenizer
        self.prompt_format = prompt_format
        self.rubric = rubric
        image_ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
        if len(image_ids) != 1:
            raise ConfigError(
                f"the tokenizer has no single {IMAGE_TOKEN} token (got {image_ids}); it is not a Qwen2.5-VL tokenizer"
            )
        self.image_token_id = image_ids[0]
        wanted = set(dimensions) if dimensions is not None else None
        self._dimensions = {
            dim.name: self._dimension_prompt(dim) for dim in rubric.dimensions if wanted is None or dim.name in wanted
        }

    # ---- building ---------------------------------------------------------------------------

    def render(self, messages: list[dict]) -> str:
        """The chat template's text for these messages, with the generation prompt (as vLLM renders a chat)."""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def _split(self, text: str) -> tuple[str, str]:
        """(text before the image placeholder, text after it); exactly one placeholder is required."""
        if text.count(IMAGE_TOKEN) != 1:
            raise ConfigError(f"a rendered prompt must hold exactly one {IMAGE_TOKEN}, found {text.count(IMAGE_TOKEN)}")
        before, after = text.split(IMAGE_TOKEN)
        return before, after

    def _dimension_prompt(self, dim) -> _DimensionPrompt:
        before, after = self._split(self.render(self.prompt_format.chat_messages(self.rubric, dim, {"type": "image"})))
        cut = None
        if self.prompt_format.after_image_for(self.rubric, _SENTINEL) is not None:
            with_sentinel = self.render(
                self.prompt_format.chat_messages(self.rubric, dim, {"type": "image"}, _SENTINEL)
            )
            before_again, after_sentinel = self._split(with_sentinel)
            if before_again != before or after_sentinel.count(_SENTINEL) != 1:
                raise ConfigError(
                    f"prompt format {self.prompt_format.name!r}: the description must come after the image, once"
                )
            head, tail = after_sentinel.split(_SENTINEL)
            cut = (head, tail)
        return _DimensionPrompt(self._encode(before), self._encode(after), cut)

    # ---- per request ------------------------------------------------------------------------

    @property
    def dimensions(self) -> list[str]:
        return list(self._dimensions)

    def for_dimension(self, dimension: str, description: str | None = None) -> list[int]:
        """The prompt's ids for one dimension (and the artwork's description, where the rubric reads one)."""
        prompt = self._dimensions[dimension]
        after = prompt.after_image
        if prompt.description_cut is not None and self.prompt_format.after_image_for(self.rubric, description):
            head, tail = prompt.description_cut
            after = self._encode(head + description.strip() + tail)
        return [*prompt.before_image, self.image_token_id, *after]

    def for_feedback(self, scores: dict[str, float], description: str | None = None) -> list[int]:
        """The feedback adapter's prompt ids, with the scores just predicted in its instruction."""
        text = self.render(feedback_messages(self.prompt_format, self.rubric, scores, {"type": "image"}, description))
        before, after = self._split(text)
        return [*self._encode(before), self.image_token_id, *self._encode(after)]

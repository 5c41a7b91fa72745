"""Prompt building, shared by pre-training, training, the reference backend and the router.

The same messages go to transformers (chat template applied locally) and to vLLM
(OpenAI chat format, template applied by the engine), so both paths see the same
tokens.

Layout (settled once; the base is pre-trained and the adapters trained on it):
everything fixed per dimension comes first — the system text, the dimension's
instruction, its level anchors and the answer instruction — and the image comes
last, followed only by the artwork's description for rubrics that use one, then
the chat template's assistant header. vLLM reuses the KV of full prompt blocks
per adapter before the first image token, so with this layout each request
prefills only its image tokens and a short suffix.
"""
from __future__ import annotations

from adapters.rubric import Dimension, Rubric

SYSTEM_PROMPT = "You are an art educator scoring children's artworks with a rubric."


def dimension_instruction(rubric: Rubric, dimension: Dimension) -> str:
    """The fixed text of the user turn for one dimension (everything before the image)."""
    low, high = rubric.score_tokens[0], rubric.score_tokens[-1]
    anchors = " ".join(f"{level}: {text}" for level, text in sorted(dimension.levels.items()))
    return "\n".join(
        [f"Score the {dimension.title} of this artwork. {dimension.description}", f"Levels - {anchors}",
         f"Answer with one digit from {low} to {high}."]
    )


def description_text(rubric: Rubric, description: str | None) -> str | None:
    """The text after the image: the artwork's description, only for rubrics that use one."""
    if rubric.uses_description and description and description.strip():
        return f"The artwork's description: {description.strip()}"
    return None


def user_turn(text: str, image_part: dict, after_image: str | None = None) -> list[dict]:
    """One user turn in the fixed layout: text, then the image, then optional per-image text."""
    content = [{"type": "text", "text": text}, image_part]
    if after_image:
        content.append({"type": "text", "text": after_image})
    return content


def chat_messages(rubric: Rubric, dimension: Dimension, image_part: dict, description: str | None = None) -> list[dict]:
    """Messages for one dimension. `image_part` is the content part carrying the image.

    For vLLM/OpenAI it is `{"type": "image_url", "image_url": {"url": data_url}}`;
    for transformers it is `{"type": "image"}` with the image passed to the processor.
    """
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user", "content": user_turn(dimension_instruction(rubric, dimension), image_part,
                                              description_text(rubric, description))},
    ]

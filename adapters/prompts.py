"""Prompt building, shared by training, the reference backend and the router.

The same messages go to transformers (chat template applied locally) and to vLLM
(OpenAI chat format, template applied by the engine), so both paths see the same
tokens. The image comes first so that every dimension's prompt starts the same way.
"""
from __future__ import annotations

from adapters.rubric import Dimension, Rubric

SYSTEM_PROMPT = "You are an art educator scoring children's artworks with a rubric."


def dimension_instruction(rubric: Rubric, dimension: Dimension, description: str | None = None) -> str:
    """The text part of the user turn for one dimension."""
    low, high = rubric.score_tokens[0], rubric.score_tokens[-1]
    anchors = " ".join(f"{level}: {text}" for level, text in sorted(dimension.levels.items()))
    parts = [f"Score the {dimension.title} of this artwork. {dimension.description}", f"Levels - {anchors}"]
    if rubric.uses_description and description:
        parts.append(f"The artwork's description: {description.strip()}")
    parts.append(f"Answer with one digit from {low} to {high}.")
    return "\n".join(parts)


def chat_messages(rubric: Rubric, dimension: Dimension, image_part: dict, description: str | None = None) -> list[dict]:
    """Messages for one dimension. `image_part` is the content part carrying the image.

    For vLLM/OpenAI it is `{"type": "image_url", "image_url": {"url": data_url}}`;
    for transformers it is `{"type": "image"}` with the image passed to the processor.
    """
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {
            "role": "user",
            "content": [image_part, {"type": "text", "text": dimension_instruction(rubric, dimension, description)}],
        },
    ]

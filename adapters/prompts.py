"""Prompt formats as data, shared by pre-training, training, the reference backend and the router.

A prompt format (`adapters/prompt_formats/NAME.yaml`, beside the rubrics) says
what each adapter is asked: the system text (or none of our own, so the base's
chat template applies its default), the instruction for one dimension, where the
image goes, the text after the image, and the image recipe (`adapters.images`).
A deployment set names its format; every path that builds a prompt takes the
`PromptFormat` object, so the adapters are asked at serving exactly what they
were asked in training.

The same messages go to transformers (chat template applied locally) and to vLLM
(OpenAI chat format, template applied by the engine), so both see the same tokens.

Shipped formats:
- `kidsart`: this project's layout. Everything fixed per dimension comes first and
  the image last, followed only by the artwork's description for rubrics that use
  one. vLLM reuses the KV of full prompt blocks per adapter before the first image
  token, so each request prefills only its image tokens and a short suffix.
- `kidsartbench-release`: the published KidsArtBench inference prompt (image first,
  then one sentence), for serving their released adapters as they were trained.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from adapters import PACKAGE_DIR
from adapters.datafiles import load_data_file, shipped_names
from adapters.errors import ConfigError
from adapters.rubric import Dimension, Rubric

PROMPT_FORMAT_DIR = PACKAGE_DIR / "prompt_formats"
DEFAULT_PROMPT_FORMAT = "kidsart"

# Fields an instruction may use, filled from the rubric and the dimension.
INSTRUCTION_FIELDS = {
    "dimension": "the dimension's name (snake_case, as served)",
    "title": "the dimension's title (name with spaces)",
    "definition": "the dimension's one-sentence description",
    "levels": "the level anchors, '1: ... 2: ...'",
    "low": "the lowest score token",
    "high": "the highest score token",
}
AFTER_IMAGE_FIELDS = {"artwork_description": "the artwork's text description, stripped"}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


class PromptFormat(BaseModel):
    """One prompt format: what every adapter served with it is asked."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Identifier, named by deployment sets and manifests.")
    description: str = Field(description="One line: what this format is.")
    attribution: str | None = Field(default=None, description="Where text in this file comes from, and its licence.")
    system: str | None = Field(
        description="System message text; null: no system message of our own (the chat template's default applies)."
    )
    image_position: Literal["after_text", "before_text"] = Field(
        description="Where the image goes in the user turn relative to the instruction."
    )
    instruction: str = Field(
        description=f"Template of the dimension's instruction; fields: {sorted(INSTRUCTION_FIELDS)}."
    )
    after_image: str | None = Field(
        default=None,
        description="Template of the text after the image, used only for rubrics that use a description "
        f"and only when one is given; fields: {sorted(AFTER_IMAGE_FIELDS)}.",
    )
    image_recipe: Literal["letterbox", "kidsartbench-release"] = Field(
        description="How an upload becomes the model's input image (adapters.images.prepare_image)."
    )
    image_size: int | None = Field(
        default=None, ge=28, description="Side of the square input the recipe requires; null: the profile's image_size."
    )

    @model_validator(mode="after")
    def _templates_use_known_fields(self) -> PromptFormat:
        unknown = _fields(self.instruction) - set(INSTRUCTION_FIELDS)
        if unknown:
            raise ValueError(f"instruction uses unknown fields {sorted(unknown)}; known: {sorted(INSTRUCTION_FIELDS)}")
        if self.after_image is not None:
            unknown = _fields(self.after_image) - set(AFTER_IMAGE_FIELDS)
            if unknown:
                raise ValueError(
                    f"after_image uses unknown fields {sorted(unknown)}; known: {sorted(AFTER_IMAGE_FIELDS)}"
                )
            if self.image_position != "after_text":
                raise ValueError("after_image needs image_position: after_text (the text after the image comes last)")
        return self

    def check_image_size(self, image_size: int, where: str) -> None:
        """Refuse a profile whose image size is not the one this format's recipe requires."""
        if self.image_size is not None and self.image_size != image_size:
            raise ConfigError(
                f"{where}: prompt format {self.name!r} prepares {self.image_size}x{self.image_size} images, "
                f"but the profile's image_size is {image_size}"
            )

    def instruction_for(self, rubric: Rubric, dimension: Dimension) -> str:
        """The dimension's instruction text (fixed per dimension)."""
        return self.instruction.format(
            dimension=dimension.name,
            title=dimension.title,
            definition=dimension.description,
            levels=" ".join(f"{level}: {text}" for level, text in sorted(dimension.levels.items())),
            low=rubric.score_tokens[0],
            high=rubric.score_tokens[-1],
        )

    def after_image_for(self, rubric: Rubric, description: str | None) -> str | None:
        """The text after the image: the artwork's description, only for rubrics that use one."""
        if self.after_image is None or not rubric.uses_description or not (description and description.strip()):
            return None
        return self.after_image.format(artwork_description=description.strip())

    def user_content(self, text: str, image_part: dict, after_image: str | None = None) -> list[dict]:
        """One user turn's content parts in this format's order."""
        if self.image_position == "before_text":
            return [image_part, {"type": "text", "text": text}]
        content = [{"type": "text", "text": text}, image_part]
        if after_image:
            content.append({"type": "text", "text": after_image})
        return content

    def messages(self, user_content: list[dict]) -> list[dict]:
        """The conversation: our system message (if the format has one), then the user turn."""
        system = [{"role": "system", "content": [{"type": "text", "text": self.system}]}] if self.system else []
        return [*system, {"role": "user", "content": user_content}]

    def chat_messages(
        self, rubric: Rubric, dimension: Dimension, image_part: dict, description: str | None = None
    ) -> list[dict]:
        """Messages for one dimension. `image_part` is the content part carrying the image.

        For vLLM/OpenAI it is `{"type": "image_url", "image_url": {"url": data_url}}`;
        for transformers it is `{"type": "image"}` with the image passed to the processor.
        """
        content = self.user_content(
            self.instruction_for(rubric, dimension), image_part, self.after_image_for(rubric, description)
        )
        return self.messages(content)


def shipped_prompt_formats() -> list[str]:
    return shipped_names(PROMPT_FORMAT_DIR)


def load_prompt_format(name_or_path: str | Path = DEFAULT_PROMPT_FORMAT) -> PromptFormat:
    """Load and validate a prompt format by shipped name or by path."""
    return load_data_file(PromptFormat, "prompt format", name_or_path, PROMPT_FORMAT_DIR)

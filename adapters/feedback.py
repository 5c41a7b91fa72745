"""Written feedback beside the scores: the feedback adapter's prompt, its settings, and how a comment is read.

A feedback adapter is one more LoRA module on the scoring base, served under the
module name `feedback`. It is asked after the scores are known, with the image,
the artwork's description when one is given, and the scores just predicted, so
the comment can agree with the numbers. Training (`kidsart train-feedback`), the
reference backend, the router and `kidsart eval-feedback` all build the prompt
here, so the adapter is asked at serving what it was trained on.

The scores are listed from highest to lowest (ties in rubric order) with one
decimal, and the instruction ends by naming the top and the bottom of that list
("Strongest: ... Weakest: ..."): the comment's strength is the former and the thing
to work on the latter. Both are read off the numbers just predicted, so the words
agree with them; naming them next to the answer is what lets the 3-layer test
base ground its comment at all (listing the scores alone, its adapter named the
same dimension for every image: grounded_strength 0.06 on 48 held-out images). Comments name dimensions by their rubric
titles
(`Dimension.title`, e.g. "color richness"); `named_strength_and_weakness` reads
them back in order of appearance (the comment grammar states the strength first),
which `kidsart eval-feedback` uses to measure grounding.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from adapters.errors import FeedbackNotDeployedError
from adapters.prompts import PromptFormat
from adapters.rubric import Rubric

FEEDBACK_MODULE = "feedback"
FEEDBACK_TASK = "feedback"
SCORE_DECIMALS = 1

FEEDBACK_INSTRUCTION = (
    "Write feedback for the child who made this artwork, as their art teacher: what it shows, "
    "one strength, one thing to work on and one next step. Scores, highest first: {ranked}. "
    "Strongest: {strongest}. Weakest: {weakest}."
)


class FeedbackSettings(BaseModel):
    """How the feedback adapter generates (profile key `feedback`); generation is always bounded."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(default=160, ge=8, le=1024, description="Most tokens a comment may have.")
    temperature: float = Field(
        default=0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 is greedy (the same comment every time)."
    )
    top_p: float = Field(default=1.0, gt=0.0, le=1.0, description="Nucleus sampling mass (used when temperature > 0).")
    repetition_penalty: float = Field(
        default=1.0, ge=1.0, le=2.0, description="vLLM/transformers repetition penalty (1: none)."
    )
    timeout_s: float = Field(default=60.0, gt=0, le=600, description="Longest the router waits for one comment.")


def require_feedback_adapter(served: bool, where: str) -> None:
    """Refuse a feedback request up front when `where` (e.g. "deployment 'x'", "the router at URL") serves none."""
    if not served:
        raise FeedbackNotDeployedError(
            f"feedback was asked for, but {where} has no feedback adapter: no {FEEDBACK_MODULE}@<hash> LoRA module "
            "is served (name one as `feedback_adapter` in the deployment set)"
        )


def ranked_scores(rubric: Rubric, scores: dict[str, float]) -> list[tuple[str, float]]:
    """(dimension, score rounded as the prompt shows it), highest first; ties keep rubric order."""
    order = {name: i for i, name in enumerate(rubric.dimension_names)}
    shown = [(name, round(float(value), SCORE_DECIMALS)) for name, value in scores.items() if name in order]
    if not shown:
        raise ValueError("feedback needs at least one scored dimension of the rubric")
    return sorted(shown, key=lambda item: (-item[1], order[item[0]]))


def feedback_instruction(rubric: Rubric, scores: dict[str, float]) -> str:
    ranked_list = ranked_scores(rubric, scores)
    ranked = ", ".join(f"{rubric.dimension(name).title} {value:.{SCORE_DECIMALS}f}" for name, value in ranked_list)
    return FEEDBACK_INSTRUCTION.format(
        ranked=ranked,
        strongest=rubric.dimension(ranked_list[0][0]).title,
        weakest=rubric.dimension(ranked_list[-1][0]).title,
    )


def feedback_messages(
    prompt_format: PromptFormat,
    rubric: Rubric,
    scores: dict[str, float],
    image_part: dict,
    description: str | None = None,
) -> list[dict]:
    """The feedback adapter's conversation, in the deployment's prompt format (image part as in `chat_messages`)."""
    after = None
    if description and description.strip():
        after = f"The artwork's description: {description.strip()}"
    return prompt_format.messages(prompt_format.user_content(feedback_instruction(rubric, scores), image_part, after))


def _title_pattern(rubric: Rubric) -> re.Pattern:
    titles = sorted(
        {d.title for d in rubric.dimensions}, key=len, reverse=True
    )  # longest first: "color richness" before "color"
    return re.compile(r"\b(" + "|".join(re.escape(t) for t in titles) + r")\b", re.IGNORECASE)


def named_spans(text: str, rubric: Rubric) -> list[tuple[str, int, int]]:
    """(dimension, start, end) of the first time a comment names each dimension by title, in order of appearance."""
    by_title = {d.title.lower(): d.name for d in rubric.dimensions}
    seen: dict[str, tuple[str, int, int]] = {}
    for match in _title_pattern(rubric).finditer(text):
        name = by_title[match.group(1).lower()]
        seen.setdefault(name, (name, match.start(1), match.end(1)))
    return list(seen.values())


def named_dimensions(text: str, rubric: Rubric) -> list[str]:
    """Dimensions a comment names by title, in order of first appearance."""
    return [name for name, _, _ in named_spans(text, rubric)]


def named_strength_and_weakness(text: str, rubric: Rubric) -> tuple[str | None, str | None]:
    """The comment's named strength (the first dimension it names) and weakness (the second)."""
    named = named_dimensions(text, rubric)
    return (named[0] if named else None), (named[1] if len(named) > 1 else None)


def is_extreme(name: str | None, scores: dict[str, float], *, highest: bool) -> bool:
    """Whether `name` is among the highest (or lowest) scores as the prompt shows them (ties count)."""
    if name is None or name not in scores:
        return False
    shown = {dim: round(float(v), SCORE_DECIMALS) for dim, v in scores.items()}
    target = max(shown.values()) if highest else min(shown.values())
    return shown[name] == target

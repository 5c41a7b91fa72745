"""Prompts as token ids (adapters.prompt_tokens) equal the rendered chat template, token for token."""

import pytest

from adapters.prompt_tokens import PromptTokens
from adapters.prompts import load_prompt_format
from adapters.rubric import load_rubric

TINY_BASE = "adapters/bases/tiny"


@pytest.fixture(scope="module")
def processor():
    from transformers import AutoProcessor

    from adapters.locations import resolve_path

    return AutoProcessor.from_pretrained(resolve_path(TINY_BASE))


def _rendered_ids(processor, messages) -> list[int]:
    """Today's prompt: the processor's chat template rendered, then tokenised whole (what vLLM's server did)."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor.tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("format_name", ["kidsart", "kidsartbench-release"])
@pytest.mark.parametrize("rubric_name", ["kidsartbench", "creativity5"])
@pytest.mark.parametrize(
    "description", [None, "  A red house under a big yellow sun, drawn with crayons.  ", "é ü 漢字 <b>"]
)
def test_dimension_ids_equal_the_rendered_template(processor, format_name, rubric_name, description):
    prompt_format, rubric = load_prompt_format(format_name), load_rubric(rubric_name)
    tokens = PromptTokens(processor.tokenizer, prompt_format, rubric)
    assert tokens.dimensions == [d.name for d in rubric.dimensions]
    for dim in rubric.dimensions:
        expected = _rendered_ids(processor, prompt_format.chat_messages(rubric, dim, {"type": "image"}, description))
        assert tokens.for_dimension(dim.name, description) == expected, (format_name, rubric_name, dim.name)
        assert expected.count(tokens.image_token_id) == 1


def test_description_changes_only_the_part_after_the_image(processor):
    rubric = load_rubric("creativity5")
    tokens = PromptTokens(processor.tokenizer, load_prompt_format("kidsart"), rubric)
    dim = rubric.dimensions[0].name
    plain, described = tokens.for_dimension(dim), tokens.for_dimension(dim, "a cat")
    cut = plain.index(tokens.image_token_id) + 1
    assert described[:cut] == plain[:cut] and described != plain
    assert tokens.for_dimension(dim, "   ") == plain  # a blank description is no description


@pytest.mark.parametrize("format_name", ["kidsart", "kidsartbench-release"])
@pytest.mark.parametrize("description", [None, "a dog in the rain"])
def test_feedback_ids_equal_the_rendered_template(processor, format_name, description):
    from adapters.feedback import feedback_messages

    prompt_format, rubric = load_prompt_format(format_name), load_rubric("kidsartbench")
    tokens = PromptTokens(processor.tokenizer, prompt_format, rubric)
    scores = {d.name: 1.0 + (i % 5) * 0.8 for i, d in enumerate(rubric.dimensions)}
    expected = _rendered_ids(
        processor, feedback_messages(prompt_format, rubric, scores, {"type": "image"}, description)
    )
    assert tokens.for_feedback(scores, description) == expected

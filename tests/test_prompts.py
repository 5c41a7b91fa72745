"""Prompt building: same messages for both paths, image first, description only when the rubric asks."""
from adapters.prompts import SYSTEM_PROMPT, chat_messages, dimension_instruction
from adapters.rubric import load_rubric


def test_instruction_names_dimension_levels_and_answer_format():
    rubric = load_rubric()
    dim = rubric.dimension("color_richness")
    text = dimension_instruction(rubric, dim)
    assert "color richness" in text and dim.description in text
    for level, anchor in dim.levels.items():
        assert f"{level}: {anchor}" in text
    assert text.endswith("Answer with one digit from 1 to 5.")


def test_description_only_for_rubrics_that_use_it():
    kids = load_rubric("kidsartbench")
    assert "beach" not in dimension_instruction(kids, kids.dimensions[0], "a beach")
    creative = load_rubric("creativity5")
    assert "The artwork's description: a beach" in dimension_instruction(creative, creative.dimensions[0], "a beach")


def test_messages_put_image_first_and_differ_per_dimension():
    rubric = load_rubric()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    first = chat_messages(rubric, rubric.dimensions[0], part)
    second = chat_messages(rubric, rubric.dimensions[1], part)
    assert first[0]["content"][0]["text"] == SYSTEM_PROMPT
    assert first[1]["content"][0] is part
    assert first[1]["content"][1]["text"] != second[1]["content"][1]["text"]


def test_tiny_chat_template_renders_image_placeholder(tiny_profile):
    from adapters.hf_scoring import ScoringProcessor

    rubric = load_rubric()
    scoring = ScoringProcessor.load(tiny_profile.base.resolved_path, rubric, tiny_profile.image_size)
    text = scoring.prompt_text(rubric, rubric.dimensions[0])
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.endswith("<|im_start|>assistant\n")
    assert len(set(scoring.score_token_ids)) == 5

"""Prompt building: same messages for both paths; fixed text first, the image last, the description after it."""
from adapters.prompts import SYSTEM_PROMPT, chat_messages, description_text, dimension_instruction
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
    assert description_text(kids, "a beach") is None
    part = {"type": "image"}
    assert len(chat_messages(kids, kids.dimensions[0], part, "a beach")[1]["content"]) == 2
    creative = load_rubric("creativity5")
    assert description_text(creative, "  a beach ") == "The artwork's description: a beach"
    assert description_text(creative, "   ") is None
    content = chat_messages(creative, creative.dimensions[0], part, "a beach")[1]["content"]
    assert content[1] is part and content[2]["text"] == "The artwork's description: a beach"


def test_fixed_text_first_image_last():
    """Everything fixed per dimension precedes the image, so the engine can reuse its KV across images."""
    rubric = load_rubric()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    first = chat_messages(rubric, rubric.dimensions[0], part)
    second = chat_messages(rubric, rubric.dimensions[1], part)
    assert first[0]["content"][0]["text"] == SYSTEM_PROMPT
    assert first[1]["content"][0]["text"] == dimension_instruction(rubric, rubric.dimensions[0])
    assert first[1]["content"][-1] is part
    assert first[1]["content"][0]["text"] != second[1]["content"][0]["text"]


def test_tiny_chat_template_puts_image_just_before_the_assistant_header(tiny_profile):
    from adapters.hf_scoring import ScoringProcessor

    rubric = load_rubric()
    scoring = ScoringProcessor.load(tiny_profile.base.resolved_path, rubric, tiny_profile.image_size)
    text = scoring.prompt_text(rubric, rubric.dimensions[0])
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.endswith("Answer with one digit from 1 to 5.<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    assert len(set(scoring.score_token_ids)) == 5

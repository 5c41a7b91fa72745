"""Prompt formats as data: the same messages for both paths; our layout (fixed text first, image last)
and the published KidsArtBench inference prompt, token for token."""

import pytest

from adapters.errors import ConfigError
from adapters.prompts import PromptFormat, load_prompt_format, shipped_prompt_formats
from adapters.rubric import load_rubric

OURS = load_prompt_format("kidsart")
RELEASE = load_prompt_format("kidsartbench-release")


def test_shipped_formats():
    assert {"kidsart", "kidsartbench-release"} <= set(shipped_prompt_formats())
    assert OURS.image_recipe == "letterbox" and RELEASE.image_recipe == "kidsartbench-release"
    assert RELEASE.system is None and RELEASE.image_size == 224
    assert "bigrayss/KidsArtBench" in RELEASE.attribution and "MIT" in RELEASE.attribution


def test_our_instruction_is_exactly_what_the_committed_adapters_were_trained_on():
    rubric = load_rubric()
    dim = rubric.dimension("color_richness")
    anchors = " ".join(f"{level}: {text}" for level, text in sorted(dim.levels.items()))
    expected = (
        f"Score the color richness of this artwork. {dim.description}\nLevels - {anchors}\n"
        "Answer with one digit from 1 to 5."
    )
    assert OURS.instruction_for(rubric, dim) == expected
    messages = OURS.chat_messages(rubric, dim, {"type": "image"})
    assert messages[0] == {
        "role": "system",
        "content": [{"type": "text", "text": "You are an art educator scoring children's artworks with a rubric."}],
    }
    assert messages[1]["content"] == [{"type": "text", "text": expected}, {"type": "image"}]


def test_description_only_for_rubrics_that_use_it():
    kids = load_rubric("kidsartbench")
    part = {"type": "image"}
    assert OURS.after_image_for(kids, "a beach") is None
    assert len(OURS.chat_messages(kids, kids.dimensions[0], part, "a beach")[1]["content"]) == 2
    creative = load_rubric("creativity5")
    assert OURS.after_image_for(creative, "  a beach ") == "The artwork's description: a beach"
    assert OURS.after_image_for(creative, "   ") is None
    content = OURS.chat_messages(creative, creative.dimensions[0], part, "a beach")[1]["content"]
    assert content[1] is part and content[2]["text"] == "The artwork's description: a beach"


def test_fixed_text_first_image_last():
    """Everything fixed per dimension precedes the image, so the engine can reuse its KV across images."""
    rubric = load_rubric()
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    first = OURS.chat_messages(rubric, rubric.dimensions[0], part)
    second = OURS.chat_messages(rubric, rubric.dimensions[1], part)
    assert first[1]["content"][-1] is part
    assert first[1]["content"][0]["text"] != second[1]["content"][0]["text"]


def test_release_format_is_one_user_turn_image_then_their_sentence():
    rubric = load_rubric()
    part = {"type": "image"}
    messages = RELEASE.chat_messages(rubric, rubric.dimension("line_texture"), part, "ignored description")
    assert messages == [
        {
            "role": "user",
            "content": [
                part,
                {
                    "type": "text",
                    "text": (
                        "<image>Assess the student's artwork based on the 'line_texture' criterion and provide a "
                        "score (1-5). "
                        "Only output a score(1-5)."
                    ),
                },
            ],
        }
    ]


def test_formats_refuse_unknown_fields_and_bad_layouts(tmp_path):
    base = OURS.model_dump()
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        PromptFormat.model_validate({**base, "instruction": "Score {colour}"})
    with pytest.raises(ValueError, match="after_image needs image_position: after_text"):
        PromptFormat.model_validate({**base, "image_position": "before_text"})
    with pytest.raises(ValueError, match="extra"):
        PromptFormat.model_validate({**base, "sytem": "typo"})
    with pytest.raises(ConfigError, match=r"prompt format .*no-such-format.yaml does not exist \(shipped: "):
        load_prompt_format("no-such-format")
    with pytest.raises(ConfigError, match="prepares 224x224 images, but the profile's image_size is 112"):
        RELEASE.check_image_size(112, "profile x")


def test_tiny_chat_template_puts_image_just_before_the_assistant_header(tiny_profile):
    from adapters.hf_scoring import ScoringProcessor

    rubric = load_rubric()
    scoring = ScoringProcessor.load(tiny_profile.base.resolved_path, rubric, tiny_profile.image_size, OURS)
    text = scoring.prompt_text(rubric, rubric.dimensions[0])
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
    assert text.endswith(
        "Answer with one digit from 1 to "
        "5.<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n"
    )
    assert len(set(scoring.score_token_ids)) == 5


def test_release_prompt_renders_as_their_conversation_does(tiny_profile):
    """Token for token: our release-format messages and their conversation (written here as their
    inference builds it: one user turn, the image entry, then the sentence) render the same text."""
    from adapters.hf_scoring import ScoringProcessor

    rubric = load_rubric()
    scoring = ScoringProcessor.load(tiny_profile.base.resolved_path, rubric, tiny_profile.image_size, RELEASE)
    processor = scoring.processor
    for dim in rubric.dimensions:
        theirs = [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": "file:///artwork.png"},
                    {
                        "type": "text",
                        "text": f"<image>Assess the student's artwork based on the '{dim.name}' criterion and "
                        "provide a score (1-5). Only output a score(1-5).",
                    },
                ],
            }
        ]
        expected = processor.apply_chat_template(theirs, tokenize=False, add_generation_prompt=True)
        assert scoring.prompt_text(rubric, dim) == expected
        ids = processor.tokenizer(expected)["input_ids"]
        assert processor.tokenizer(scoring.prompt_text(rubric, dim))["input_ids"] == ids
    # the tiny base's template adds no default system prompt; the 7B's adds its own to both alike
    assert "<|im_start|>system" not in scoring.prompt_text(rubric, rubric.dimensions[0])

"""Feedback pieces without a model: the prompt, the reference-comment grammar and how comments are read back."""

import numpy as np
import pytest

from adapters.feedback import (
    FeedbackSettings,
    feedback_instruction,
    feedback_messages,
    is_extreme,
    named_strength_and_weakness,
    ranked_scores,
)
from adapters.prompts import load_prompt_format
from adapters.rubric import load_rubric
from train.feedback_comments import reference_comment
from train.feedback_train import jittered_scores
from train.synth import RUBRIC_LABELS, _render

KIDS = load_rubric("kidsartbench")
CREATIVITY = load_rubric("creativity5")


def test_scores_are_listed_highest_first_with_ties_in_rubric_order():
    scores = {"realism": 2.04, "imagination": 4.26, "color_richness": 4.31, "line_texture": 2.0, "deformation": 3.0}
    ranked = ranked_scores(KIDS, scores)
    # 4.31 and 4.26 both show as 4.3: rubric order (imagination before color_richness) breaks the tie
    assert [name for name, _ in ranked] == ["imagination", "color_richness", "deformation", "realism", "line_texture"]
    text = feedback_instruction(KIDS, scores)
    assert "imagination 4.3, color richness 4.3, deformation 3.0, realism 2.0, line texture 2.0" in text
    assert text.endswith("Strongest: imagination. Weakest: line texture.")
    with pytest.raises(ValueError, match="at least one scored dimension"):
        ranked_scores(KIDS, {"not_a_dimension": 3.0})


def test_feedback_messages_carry_image_scores_and_description_in_the_prompt_format():
    fmt = load_prompt_format("kidsart")
    part = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = feedback_messages(fmt, CREATIVITY, {"originality": 3.5, "color": 1.2}, part, "  a red dragon ")
    assert messages[0]["role"] == "system"
    content = messages[1]["content"]
    assert content[0]["type"] == "text" and "originality 3.5, color 1.2" in content[0]["text"]
    assert content[1] == part
    assert content[2] == {"type": "text", "text": "The artwork's description: a red dragon"}
    without = feedback_messages(fmt, CREATIVITY, {"originality": 3.5}, part, None)[1]["content"]
    assert len(without) == 2


def test_reading_back_the_named_strength_and_weakness():
    text = "You have drawn a head. Color richness is a real strength here. The part to work on is color contrast."
    assert named_strength_and_weakness(text, KIDS) == ("color_richness", "color_contrast")
    assert named_strength_and_weakness("A nice drawing.", KIDS) == (None, None)
    # creativity5's title "color" is a whole word: "colours" in a fact sentence does not count
    text = "It uses four colours. Your texture is the strongest part of this work. Your color needs the most attention."
    assert named_strength_and_weakness(text, CREATIVITY) == ("texture", "color")


def test_extremes_count_ties_at_the_precision_the_prompt_shows():
    scores = {"a": 4.31, "b": 4.26, "c": 1.04, "d": 2.5}
    assert is_extreme("a", scores, highest=True) and is_extreme("b", scores, highest=True)
    assert not is_extreme("d", scores, highest=True) and is_extreme("c", scores, highest=False)
    assert not is_extreme(None, scores, highest=True) and not is_extreme("zzz", scores, highest=False)


@pytest.mark.parametrize("rubric", [KIDS, CREATIVITY])
def test_reference_comments_name_the_labels_top_and_bottom_and_vary(rubric):
    columns = RUBRIC_LABELS[rubric.name]
    openings, strengths = set(), set()
    for seed in range(40):
        _, labels, _, details = _render(seed, 400, 300, "uniform")
        row = {dim: labels[source] for dim, source in columns.items()}
        comment = reference_comment(seed, row, details, rubric, columns)
        strength, weakness = named_strength_and_weakness(comment, rubric)
        ranked = ranked_scores(rubric, row)
        assert (strength, weakness) == (ranked[0][0], ranked[-1][0]), comment
        assert is_extreme(strength, row, highest=True) and is_extreme(weakness, row, highest=False)
        sentences = comment.split(". ")
        openings.add(sentences[0].split()[0])
        strengths.add(" ".join(sentences[1].split()[-3:]))
        assert len(comment.split()) < 90
    assert len(openings) >= 3 and len(strengths) >= 3  # several phrasings per part


def test_jittered_training_scores_keep_the_labels_ranking():
    rng = np.random.default_rng(3)
    labels = {
        "realism": 3,
        "deformation": 3,
        "imagination": 5,
        "color_richness": 1,
        "color_contrast": 3,
        "line_combination": 2,
        "line_texture": 4,
        "picture_organization": 3,
        "transformation": 1,
    }
    for _ in range(50):
        shown = jittered_scores(rng, KIDS, labels)
        assert [n for n, _ in ranked_scores(KIDS, shown)][0] == "imagination"
        assert [n for n, _ in ranked_scores(KIDS, shown)] == [n for n, _ in ranked_scores(KIDS, labels)]
        assert all(1.0 <= v <= 5.0 for v in shown.values())
        assert any(v != int(v) for v in shown.values())


def test_feedback_settings_are_bounded():
    with pytest.raises(ValueError):
        FeedbackSettings(max_tokens=0)
    with pytest.raises(ValueError):
        FeedbackSettings(max_tokens=5000)
    with pytest.raises(ValueError):
        FeedbackSettings(temperature=-1)


def test_name_tokens_are_found_and_weighted_in_the_training_loss():
    import torch
    from transformers import AutoTokenizer

    from adapters.feedback import named_spans
    from train.encoded import IGNORE, answer_only_inputs
    from train.feedback_train import comment_loss

    tokenizer = AutoTokenizer.from_pretrained("adapters/bases/tiny")
    comment = "You drew a cat. Color contrast is a real strength here. Your line texture needs the most attention."
    spans = [(start, end) for _, start, end in named_spans(comment, KIDS)[:2]]
    assert [comment[a:b] for a, b in spans] == ["Color contrast", "line texture"]
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    batch = answer_only_inputs(tokenizer, [prompt], [comment], weighted_spans=[spans], span_weight=5.0)
    named = tokenizer.decode(batch["input_ids"][0][batch["in_span"][0]])
    assert named.replace(" ", "") == "Colorcontrastlinetexture"
    assert set(batch["weights"][0][batch["in_span"][0]].tolist()) == {5.0}
    assert bool(((batch["weights"][0] == 0) == (batch["labels"][0] == IGNORE)).all())  # the prompt weighs nothing

    class Logits:  # a fake model: fixed random logits, so the loss can be checked by hand
        def __call__(self, **inputs):
            generator = torch.Generator().manual_seed(3)
            return type(
                "Out", (), {"logits": torch.randn(*inputs["input_ids"].shape, len(tokenizer), generator=generator)}
            )

    plain = {**batch, "weights": (batch["labels"] != IGNORE).float()}
    logits = Logits()(input_ids=batch["input_ids"]).logits
    reference = torch.nn.functional.cross_entropy(logits[0, :-1], batch["labels"][0, 1:], ignore_index=IGNORE)
    assert torch.isclose(comment_loss(Logits(), plain), reference, atol=1e-5)
    weighted = comment_loss(Logits(), batch)
    assert not torch.isclose(weighted, reference)  # the named tokens count more

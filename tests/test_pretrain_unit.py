"""Base pre-training, in miniature: what each stage trains, what it leaves alone, and the batches it sees."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_spec(tiny_profile):
    spec = tiny_profile.base.build.pretrain
    return spec.model_copy(
        update={
            "n_images": 24,
            "eval_images": 8,
            "vision": spec.vision.model_copy(update={"steps": 2, "batch_size": 4, "warmup_steps": 1}),
            "captions": spec.captions.model_copy(update={"steps": 2, "batch_size": 4, "warmup_steps": 1}),
        }
    )


def test_fact_targets_follow_the_drawing():
    from train.synth import render_drawing_details
    from train.vision_pretrain import FACT_NAMES, fact_targets

    _, details = render_drawing_details(7_000_000_123)
    targets = dict(zip(FACT_NAMES, fact_targets(details), strict=True))
    assert len(targets) == len(FACT_NAMES) == len(fact_targets(details))
    assert targets["colours"] == details["n_hues"] and targets["pencil_segments"] == details["n_segments"]
    assert targets["spirals"] + targets["stars"] + targets["eyes"] == details["n_motifs"]
    assert sum(targets[f"corner_{c}"] for c in range(4)) == (0 if details["corner"] is None else 1)


def test_caption_batches_label_only_the_answer(tiny_profile):
    from adapters.base_builder import random_base
    from adapters.prompts import load_prompt_format
    from train.encoded import IGNORE
    from train.pretrain import CaptionBatches, DrawingSet

    model, processor = random_base(tiny_profile)
    drawings = DrawingSet(processor, tiny_profile.image_size, range(7_000_000_000, 7_000_000_002), "test")
    data = CaptionBatches(processor, drawings, drawings.features(model), load_prompt_format("kidsart"))
    assert data.image_tokens == 64  # 224 px, 14 px patches, 2x2 merge
    batch = data.batch(
        [0, 1], [("How many colours are used?", "Three."), ("List what you see.", "A long answer here.")]
    )
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((batch["input_ids"][0] == image_id).sum()) == 64
    answer = tokenizer.decode(batch["input_ids"][0][batch["labels"][0] != IGNORE])
    assert answer == "Three.<|im_end|>"
    # padding is never a target
    assert bool((batch["labels"][batch["attention_mask"] == 0] == IGNORE).all())
    loss = model(**batch, use_cache=False).loss
    assert torch.isfinite(loss)


def test_stages_train_what_they_say(tiny_profile, tiny_spec, monkeypatch):
    import train.vision_pretrain as vision_pretrain
    from adapters.base_builder import random_base
    from train.pretrain import pretrain_base

    monkeypatch.setattr(vision_pretrain, "PROBE_TRAIN", 24)
    monkeypatch.setattr(vision_pretrain, "PROBE_TEST", 16)
    model, processor = random_base(tiny_profile)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    after_vision: dict = {}
    original = vision_pretrain.pretrain_vision

    def spy(model_, *args, **kwargs):
        out = original(model_, *args, **kwargs)
        after_vision.update({k: v.clone() for k, v in model_.state_dict().items()})
        return out

    monkeypatch.setattr(vision_pretrain, "pretrain_vision", spy)
    summary = pretrain_base(model, processor, tiny_spec, image_size=tiny_profile.image_size, seed=0)
    end = model.state_dict()
    vision_keys = [k for k in end if ".visual." in f".{k}"]
    text_keys = [k for k in end if k not in vision_keys and "rotary" not in k]
    assert vision_keys and text_keys
    # stage 1 changes the vision tower; stage 2 leaves it exactly as stage 1 left it and trains the language model
    assert any(not torch.equal(start[k], after_vision[k]) for k in vision_keys)
    assert all(torch.equal(after_vision[k], end[k]) for k in vision_keys)
    assert all(torch.equal(start[k], after_vision[k]) for k in text_keys)
    assert any(not torch.equal(after_vision[k], end[k]) for k in text_keys)
    assert summary["vision"]["steps"] == 2 and summary["captions"]["steps"] == 2
    assert set(summary["vision"]["probe_after"]) >= {"realism", "transformation", "mean"}
    assert summary["captions"]["held_out_loss_after"]["caption"] > 0
    assert not any(p.requires_grad for p in model.parameters())


def test_same_recipe_same_weights_on_this_machine(tiny_profile, tiny_spec, monkeypatch):
    """What `build-base --check` demands on a machine like the fixture's maker, in miniature: two runs, same bytes."""
    import train.vision_pretrain as vision_pretrain
    from adapters.base_builder import random_base
    from train.pretrain import pretrain_base

    monkeypatch.setattr(vision_pretrain, "PROBE_TRAIN", 24)
    monkeypatch.setattr(vision_pretrain, "PROBE_TEST", 16)
    runs = []
    for _ in range(2):
        model, processor = random_base(tiny_profile)
        pretrain_base(model, processor, tiny_spec, image_size=tiny_profile.image_size, seed=0)
        runs.append(model.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])

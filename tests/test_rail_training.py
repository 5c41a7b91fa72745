"""The RAFT loss uses the shared expected-score function, and gradients reach the LoRA weights."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from adapters.rail import expected_score
from train.trainer import TrainConfig, raft_loss


def test_raft_loss_is_mse_of_shared_expected_score():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    labels = torch.tensor([1, 2, 3, 4, 5, 3])
    loss, mean = raft_loss(logits, labels, [1, 2, 3, 4, 5])
    _, reference, _ = expected_score(logits, [1, 2, 3, 4, 5])
    assert torch.allclose(mean, reference)
    assert torch.allclose(loss, ((reference - labels.float()) ** 2).mean())
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_raft_loss_calls_the_shared_function(monkeypatch):
    import adapters.rail as rail

    calls = []
    original = rail.expected_score

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(rail, "expected_score", spy)
    raft_loss(torch.zeros(2, 5), torch.tensor([1, 5]), [1, 2, 3, 4, 5])
    assert calls


def test_cross_entropy_variants():
    logits = torch.tensor([[5.0, 0, 0, 0, 0], [0, 0, 0, 0, 5.0]])
    labels = torch.tensor([1, 5])
    ce, _ = raft_loss(logits, labels, [1, 2, 3, 4, 5], loss="cross_entropy")
    assert ce < 0.1
    plain, _ = raft_loss(logits, labels, [1, 2, 3, 4, 5])
    mixed, _ = raft_loss(logits, labels, [1, 2, 3, 4, 5], ce_weight=0.5)
    assert torch.isclose(mixed, plain + 0.5 * ce)


def test_perfect_prediction_has_low_loss():
    logits = torch.full((5, 5), -30.0)
    for i in range(5):
        logits[i, i] = 30.0
    loss, mean = raft_loss(logits, torch.arange(1, 6), [1, 2, 3, 4, 5])
    assert loss < 1e-6 and torch.allclose(mean, torch.arange(1, 6).float())


def test_gradient_reaches_lora_through_the_serving_inputs(tiny_profile, tmp_path):
    """One step on real inputs (ScoringProcessor + collate) changes the LoRA weights only."""
    from peft import get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    from adapters.hf_scoring import ScoringProcessor, score_token_logits
    from adapters.prompts import load_prompt_format
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset
    from train.init_adapters import lora_config
    from train.synth import write_dataset
    from train.trainer import EncodedData

    torch.manual_seed(0)
    write_dataset(4, seed=5, out_dir=tmp_path)
    rubric = load_rubric()
    ds = load_dataset(tmp_path / "labels.csv", tmp_path / "images", rubric, ["color_richness"])
    base = tiny_profile.base.resolved_path
    scoring = ScoringProcessor.load(base, rubric, 224, load_prompt_format("kidsart"))
    base_model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32).eval()
    encoded = EncodedData(scoring, rubric, ds.samples, 224, base_model)
    dim = rubric.dimension("color_richness")
    inputs = encoded.collate([(i, dim) for i in range(4)])
    # the cached collation equals the processor's own batching (what serving does): same prompt tensors,
    # and the cached vision-tower output gives the same logits as the pixel path (tolerance 1e-5)
    from PIL import Image

    images = [scoring.prepare(Image.open(s.image_path)) for s in ds.samples]
    direct = scoring.batch_inputs(rubric, dim, images)
    for key in direct:
        if key not in ("pixel_values",):
            assert torch.equal(inputs[key], direct[key]), key
    with torch.no_grad():
        cached_logits = score_token_logits(base_model, inputs, scoring.score_token_ids)
        pixel_logits = score_token_logits(base_model, direct, scoring.score_token_ids)
    assert torch.allclose(cached_logits, pixel_logits, atol=1e-5), (cached_logits - pixel_logits).abs().max()
    model = get_peft_model(Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32), lora_config())
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    logits = score_token_logits(model, inputs, scoring.score_token_ids)
    loss, _ = raft_loss(logits, torch.tensor([s.scores["color_richness"] for s in ds.samples]), rubric.levels)
    loss.backward()
    grads = [p.grad for n, p in model.named_parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), trainable[n])]
    assert changed


def test_config_defaults_are_the_paper_recipe():
    config = TrainConfig()
    assert (config.rank, config.alpha, config.effective_batch, config.image_size) == (8, 16, 16, 224)
    assert "q_proj" in config.target_modules and config.loss == "raft"
    with pytest.raises(ValidationError, match="unknown_field"):
        TrainConfig(unknown_field=1)

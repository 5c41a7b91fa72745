"""RAIL maths: one function for numpy and torch, renormalisation, edge cases."""

import math

import numpy as np
import pytest
import torch

from adapters.errors import ScoreDistributionError
from adapters.rail import expected_score, rail_from_token_logprobs

TOKENS = ["1", "2", "3", "4", "5"]


def test_uniform_distribution_scores_three_with_known_std():
    probs, mean, std = expected_score(np.zeros(5))
    assert np.allclose(probs, 0.2)
    assert mean == pytest.approx(3.0)
    assert std == pytest.approx(math.sqrt(2.0))


def test_certain_distribution_gives_that_level_and_zero_std():
    logits = np.array([-1e9, -1e9, -1e9, 0.0, -1e9])
    probs, mean, std = expected_score(logits)
    assert mean == pytest.approx(4.0)
    assert std == pytest.approx(0.0, abs=1e-6)


def test_logits_and_logprobs_give_the_same_score():
    logits = np.array([0.3, -1.2, 2.0, 0.5, -0.1])
    logprobs = logits - np.log(np.exp(logits).sum())
    assert expected_score(logits)[1] == pytest.approx(expected_score(logprobs)[1])


def test_large_logits_are_stable():
    probs, mean, _ = expected_score(np.array([1000.0, 1000.0, -1000.0, -1000.0, -1000.0]))
    assert np.isfinite(mean) and mean == pytest.approx(1.5)


def test_torch_matches_numpy_and_is_differentiable_batched():
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.5, -0.1], [0.0, 0.0, 0.0, 0.0, 4.0]], requires_grad=True)
    _, mean, std = expected_score(logits)
    for row in range(2):
        assert mean[row].item() == pytest.approx(float(expected_score(logits[row].detach().numpy())[1]), rel=1e-6)
    loss = ((mean - torch.tensor([4.0, 1.0])) ** 2).mean()
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert std.shape == (2,)


def test_wrong_number_of_levels_is_an_error():
    with pytest.raises(ScoreDistributionError):
        expected_score(np.zeros(4))


def test_token_logprobs_missing_tokens_get_zero_probability():
    score = rail_from_token_logprobs({"4": math.log(0.5), "5": math.log(0.5)}, TOKENS)
    assert score.score == pytest.approx(4.5)
    assert score.probs == pytest.approx([0, 0, 0, 0.5, 0.5])
    assert sum(score.probs) == pytest.approx(1.0)


def test_token_logprobs_with_no_score_token_never_default():
    with pytest.raises(ScoreDistributionError):
        rail_from_token_logprobs({"a": -0.1}, TOKENS)


def test_token_logprobs_nan_is_an_error():
    with pytest.raises(ScoreDistributionError):
        rail_from_token_logprobs({"1": float("nan"), "2": -1.0}, TOKENS)

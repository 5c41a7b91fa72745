"""The one expected-score (RAIL / RAFT) function.

KidsArtBench trains with RAFT (MSE between the label and the expected score
sum_k k * p(k) over the score tokens) and infers with RAIL (the same expected value
read from the token logprobs). Both sides call `expected_score` here, on torch
tensors (differentiable, for the loss) or on numpy arrays / lists (for the server
and the reference backend), through the array-API namespace of the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace

from adapters.errors import ScoreDistributionError

DEFAULT_LEVELS = (1, 2, 3, 4, 5)


def expected_score(score_logits, levels: Sequence[float] = DEFAULT_LEVELS):
    """Return (probabilities, expected score, standard deviation).

    `score_logits` has the score tokens on its last axis (one entry per level) and
    holds logits or logprobs: they are renormalised with a softmax over that axis,
    so logprobs restricted to the score tokens (vLLM's processed logprobs with
    allowed_token_ids) and raw logits of those tokens give the same result.
    Works batched on any leading axes; torch inputs keep their gradient.
    """
    xp = array_namespace(score_logits)
    if score_logits.shape[-1] != len(levels):
        raise ScoreDistributionError(
            f"expected {len(levels)} score-token values on the last axis, got {score_logits.shape[-1]}"
        )
    top = xp.max(score_logits, axis=-1, keepdims=True)
    weights = xp.exp(score_logits - top)
    probs = weights / xp.sum(weights, axis=-1, keepdims=True)
    level_values = xp.asarray(list(levels), dtype=probs.dtype, device=getattr(probs, "device", None))
    mean = xp.sum(probs * level_values, axis=-1)
    variance = xp.sum(probs * (level_values - mean[..., None]) ** 2, axis=-1)
    return probs, mean, xp.sqrt(xp.clip(variance, 0.0, None)) if hasattr(xp, "clip") else xp.sqrt(variance)


@dataclass(frozen=True)
class RailScore:
    """One dimension's score as the API reports it."""

    score: float
    probs: list[float]
    std: float


def rail_from_token_logprobs(
    token_logprobs: dict[str, float], score_tokens: Sequence[str], levels: Sequence[float] = DEFAULT_LEVELS
) -> RailScore:
    """RAIL score from a {token_text: logprob} map such as an OpenAI top_logprobs list.

    A score token missing from the map has probability zero. If none of the score
    tokens is present, or a value is NaN, no score can be read and this raises:
    a default score is never substituted.
    """
    values = []
    for token in score_tokens:
        value = token_logprobs.get(token, -math.inf)
        if value is None or (isinstance(value, float) and math.isnan(value)) or value == math.inf:
            raise ScoreDistributionError(f"logprob of score token {token!r} is {value!r}")
        values.append(float(value))
    if all(v == -math.inf for v in values):
        raise ScoreDistributionError(
            f"none of the score tokens {list(score_tokens)} is among the returned logprobs {sorted(token_logprobs)}"
        )
    probs, mean, std = expected_score(np.asarray(values, dtype=np.float64), levels)
    return RailScore(score=float(mean), probs=[float(p) for p in probs], std=float(std))

"""The one lookup of a rubric's score tokens ("1".."5") in a tokenizer.

RAIL reads the probabilities of exactly these tokens, so each must encode to a single
token id; anything else is a configuration error named with the tokenizer it came from.
Training, the in-process reference, the router's `allowed_token_ids`, the base builder's
check and the benchmark all call this.
"""

from __future__ import annotations

from pathlib import Path

from adapters.errors import ConfigError


def score_token_ids(tokenizer, score_tokens: list[str] | tuple[str, ...], where: str) -> list[int]:
    """The id of each score token in `tokenizer` (a transformers tokenizer); ConfigError naming `where` if one
    is not exactly one token."""
    ids = []
    for token in score_tokens:
        encoded = tokenizer.encode(token, add_special_tokens=False)
        if len(encoded) != 1:
            raise ConfigError(f"score token {token!r} is {len(encoded)} tokens ({encoded}) in {where}, not one")
        ids.append(encoded[0])
    return ids


def base_score_token_ids(base_dir: str | Path, score_tokens: list[str] | tuple[str, ...]) -> list[int]:
    """score_token_ids with the tokenizer of the base model in `base_dir`."""
    from transformers import AutoTokenizer

    return score_token_ids(AutoTokenizer.from_pretrained(base_dir), score_tokens, f"the tokenizer of {base_dir}")

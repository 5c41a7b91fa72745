"""The one score-token lookup: each score token must be one id, else a ConfigError naming the tokenizer."""

import pytest

from adapters.errors import ConfigError
from adapters.score_tokens import base_score_token_ids, score_token_ids


class _Tokenizer:
    def __init__(self, vocab):
        self.vocab = vocab

    def encode(self, text, add_special_tokens=True):
        assert add_special_tokens is False  # a BOS would make every token "two tokens"
        return self.vocab[text]


def test_one_id_per_token_in_order():
    assert score_token_ids(_Tokenizer({"1": [7], "2": [9], "3": [4]}), ["3", "1", "2"], "t") == [4, 7, 9]


def test_a_token_split_in_two_is_refused_naming_the_tokenizer():
    with pytest.raises(ConfigError, match=r"score token '10' is 2 tokens \(\[1, 0\]\) in the test tokenizer"):
        score_token_ids(_Tokenizer({"1": [1], "10": [1, 0]}), ["1", "10"], "the test tokenizer")


def test_the_tiny_bases_tokenizer_has_single_digit_tokens(tiny_profile):
    ids = base_score_token_ids(tiny_profile.base.resolved_path, list("12345"))
    assert len(set(ids)) == 5

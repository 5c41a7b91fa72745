"""Prompt tokens, prefix-cache hits and prefilled tokens per image: from the prompts and from vLLM's own counters.

`prompt_layout` tokenises each dimension's prompt exactly as the reference
backend does (adapters.hf_scoring: the base's chat template and image processor)
and finds its *fixed prefix*: every token before the first image token. That
part is the same for every image an adapter scores, so in steady state vLLM's
prefix cache serves it (in whole KV blocks); everything from the image on is
prefilled per request.

The engine's side comes from vLLM's Prometheus counters, read the same way from
the offline engine (`LLM.get_metrics()`) and from the server (`GET /metrics`):
prompt tokens, prefix-cache queries and hits (in tokens), and the per-request
histogram of KV tokens actually computed in prefill (`_sum` = prefilled tokens,
`_count` = finished requests). A measured run's figures are counter deltas.

    prefix_cache_hit_rate = prefix-cache hit tokens / fixed-prefix tokens of the run's requests
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Our name -> (vLLM metric family, sample suffix) read from the engine.
COUNTERS = {
    "prompt_tokens": ("vllm:prompt_tokens", "_total"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "_total"),
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "_total"),
    "prefilled_tokens": ("vllm:request_prefill_kv_computed_tokens", "_sum"),
    "requests": ("vllm:request_prefill_kv_computed_tokens", "_count"),
}


@dataclass(frozen=True)
class PromptLayout:
    """Token counts of one image's prompts, per dimension (image tokens expanded)."""

    prompt: dict[str, int]
    fixed_prefix: dict[str, int]
    image_tokens: int

    @property
    def prompt_tokens_per_image(self) -> int:
        return sum(self.prompt.values())

    @property
    def fixed_prefix_tokens_per_image(self) -> int:
        return sum(self.fixed_prefix.values())

    def cacheable_prefix_tokens_per_image(self, block_size: int) -> int:
        """Fixed-prefix tokens that fall in whole KV blocks (only those can be served from the cache)."""
        return sum(n // block_size * block_size for n in self.fixed_prefix.values())

    def requests(self) -> list[tuple[int, int]]:
        """(fixed prefix, tokens after it) for each dimension's request: the floor's prefill work."""
        return [(self.fixed_prefix[d], self.prompt[d] - self.fixed_prefix[d]) for d in self.prompt]

    def as_dict(self) -> dict:
        return {"prompt": self.prompt, "fixed_prefix": self.fixed_prefix, "image_tokens": self.image_tokens}


def prompt_layout(
    base_dir: Path, rubric, dimensions: list, image_size: int, image_token_id: int, prompt_format
) -> PromptLayout:
    """Tokenise each dimension's prompt (in the deployment's format) for one image, as the reference backend does."""
    from PIL import Image

    from adapters.hf_scoring import ScoringProcessor

    scoring = ScoringProcessor.load(base_dir, rubric, image_size, prompt_format)
    image = Image.new("RGB", (image_size, image_size), (128, 128, 128))
    prompt, prefix, image_tokens = {}, {}, set()
    for dim in dimensions:
        ids = scoring.batch_inputs(rubric, dim, [image], [None])["input_ids"][0].tolist()
        if image_token_id not in ids:
            raise ValueError(f"the {dim.name} prompt has no image token (id {image_token_id})")
        prompt[dim.name] = len(ids)
        prefix[dim.name] = ids.index(image_token_id)
        image_tokens.add(ids.count(image_token_id))
    if len(image_tokens) != 1:
        raise ValueError(f"dimensions see different numbers of image tokens: {sorted(image_tokens)}")
    return PromptLayout(prompt=prompt, fixed_prefix=prefix, image_tokens=image_tokens.pop())


def counters_from_offline(metrics: list) -> dict[str, float]:
    """Our counters from `LLM.get_metrics()` (vllm.v1.metrics.reader objects), summed over label sets."""
    values = dict.fromkeys(COUNTERS, 0.0)
    for ours, (family, suffix) in COUNTERS.items():
        for metric in metrics:
            if metric.name != family:
                continue
            if suffix == "_total":
                values[ours] += float(metric.value)
            elif suffix == "_sum":
                values[ours] += float(metric.sum)
            else:
                values[ours] += float(metric.count)
    return values


def counters_from_prometheus(text: str) -> dict[str, float]:
    """Our counters from the server's `/metrics` text, summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {family + suffix: ours for ours, (family, suffix) in COUNTERS.items()}
    values = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                values[wanted[sample.name]] += float(sample.value)
    return values


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before[key] for key in COUNTERS}


def token_figures(delta: dict[str, float], layout: PromptLayout, images: int, block_size: int | None) -> dict:
    """Per-image figures of one measured run from its counter deltas, beside what the prompts predict."""
    requests_expected = images * len(layout.prompt)
    fixed = layout.fixed_prefix_tokens_per_image * images
    figures = {
        "prompt_tokens_per_image": delta["prompt_tokens"] / images,
        "prefilled_tokens_per_image": delta["prefilled_tokens"] / images,
        "prefix_cache_hit_tokens_per_image": delta["prefix_cache_hits"] / images,
        "prefix_cache_hit_rate": delta["prefix_cache_hits"] / fixed if fixed else None,
        "requests": delta["requests"],
        "requests_expected": requests_expected,
        # The engine saw exactly the reference's prompts: same token count for every request.
        "prompt_tokens_match_reference": delta["prompt_tokens"] == layout.prompt_tokens_per_image * images,
        "fixed_prefix_tokens_per_image": layout.fixed_prefix_tokens_per_image,
    }
    if block_size:
        figures["cacheable_prefix_tokens_per_image"] = layout.cacheable_prefix_tokens_per_image(block_size)
    return figures

"""vLLM's offline engine as the engine replicas run it: the benchmark's engine phase and the profiler share it.

`OfflineEngine(profile)` builds `vllm.LLM` from exactly the engine replicas' flags
(`serve.engine`), the score-token sampling, one LoRA request per dimension and the replicas'
token-id prompts (`adapters.prompt_tokens`); `requests(images, with_lora)` lays out every
(dimension, image) request, dimension-major as the replicas' batches are.
"""

from __future__ import annotations

from pathlib import Path


class OfflineEngine:
    def __init__(self, profile, extra_args: list[str] | None = None):
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        from adapters.manifest import load_profile_deployment
        from adapters.prompt_tokens import PromptTokens
        from adapters.score_tokens import base_score_token_ids
        from serve.engine import engine_cli_args, parse_engine_args

        self.profile = profile
        deployment = load_profile_deployment(profile)
        self.rubric = deployment.rubric
        self.prompt_format = deployment.prompt_format
        self.dims = [d for d in self.rubric.select(None) if d.name in deployment.adapters]
        self.llm = LLM.from_engine_args(
            parse_engine_args(engine_cli_args(profile, deployment) + list(extra_args or []), offline=True)
        )
        score_ids = base_score_token_ids(profile.base.resolved_path, self.rubric.score_tokens)
        self.id_to_token = dict(zip(score_ids, self.rubric.score_tokens, strict=True))
        self.params = SamplingParams(
            max_tokens=1, temperature=0.0, logprobs=len(score_ids), allowed_token_ids=score_ids
        )
        self.loras = {
            d.name: LoRARequest(deployment.module_names[d.name], i + 1, str(deployment.adapters[d.name].path))
            for i, d in enumerate(self.dims)
        }
        prompts = PromptTokens(self.llm.get_tokenizer(), self.prompt_format, self.rubric, [d.name for d in self.dims])
        self.prompt_ids = {d.name: prompts.for_dimension(d.name) for d in self.dims}

    def load_images(self, paths: list[Path]) -> dict:
        """name -> the image prepared by the prompt format's recipe, once each."""
        from adapters.images import normalize_bytes

        recipe = self.prompt_format.image_recipe
        return {p.name: normalize_bytes(p.read_bytes(), self.profile.image_size, recipe=recipe) for p in paths}

    def requests(self, images: dict, with_lora: bool) -> tuple[list[dict], list, list[tuple[str, str]]]:
        """(prompts, LoRA requests, (image name, dimension) keys) for every dimension of every image.

        Dimension-major: vLLM batches requests in the order they are added, so each adapter's tokens form one
        contiguous run and the LoRA ops work on slices, not gathers."""
        prompts, loras, keys = [], [], []
        for d in self.dims:
            for name, image in images.items():
                prompts.append({"prompt_token_ids": self.prompt_ids[d.name], "multi_modal_data": {"image": image}})
                loras.append(self.loras[d.name] if with_lora else None)
                keys.append((name, d.name))
        return prompts, loras, keys

    def generate(self, images: dict, with_lora: bool):
        """vLLM's outputs for `requests(images, with_lora)`, with their keys."""
        prompts, loras, keys = self.requests(images, with_lora)
        return keys, self.llm.generate(prompts, self.params, lora_request=loras, use_tqdm=False)

    def reset_caches(self) -> bool:
        """Forget KV prefixes, processed images and encoder outputs; False when vLLM refused the prefix reset."""
        if not self.llm.reset_prefix_cache():
            return False
        self.llm.reset_mm_cache()
        self.llm.llm_engine.reset_encoder_cache()
        return True

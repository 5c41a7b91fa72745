"""Where does the engine's time go? A torch-profiler table of the vLLM worker for one batch.

    KIDSART_FAST_LORA_OPS=1 python -m loadtest.profile_engine --profile bench --images 8 --out runs/profile

Builds the offline engine exactly as the benchmark does (serve.engine flags), warms
it up, then profiles one `generate` of images x nine dimensions (with LoRA, or
--base without) and writes vLLM's per-operator table (sorted by self CPU time) to
<out>/*.profiler_out.txt, printing its head. Used to find the levers in docs/performance.md
"Performance"; not a benchmark (the profiler itself slows the run down).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    """A diagnostic read top to bottom (about 70 lines, kept in one piece): the engine built exactly as the
    benchmark's offline phase builds it, one warm-up, one profiled generate, the profiler's tables printed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--base", action="store_true", help="Profile the base model (no LoRA).")
    parser.add_argument("--out", default="runs/profile")
    args = parser.parse_args(argv)

    from adapters.manifest import load_profile_deployment
    from adapters.profiles import load_profile
    from loadtest.bench_inputs import ensure_bench_artifacts, write_images
    from serve.engine import engine_env

    ensure_bench_artifacts(args.profile)
    profile = load_profile(args.profile)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for key, value in engine_env(profile).items():
        os.environ.setdefault(key, value)
    images = write_images(out / "images", args.images, seed=11, prefix="p")
    warm = write_images(out / "warm", 2, seed=12, prefix="w")

    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    from adapters.images import normalize_bytes
    from adapters.prompt_tokens import PromptTokens
    from adapters.score_tokens import base_score_token_ids
    from loadtest.bench_worker import engine_llm

    deployment = load_profile_deployment(profile)
    profiler = {
        "profiler": "torch",
        "torch_profiler_dir": str(out),
        "torch_profiler_with_stack": False,
        "torch_profiler_record_shapes": True,
    }
    llm = engine_llm(profile, deployment, ["--profiler-config", json.dumps(profiler)])
    tokenizer = llm.get_tokenizer()
    rubric = deployment.rubric
    dims = [d for d in rubric.select(None) if d.name in deployment.adapters]
    score_ids = base_score_token_ids(profile.base.resolved_path, rubric.score_tokens)
    params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=5, allowed_token_ids=score_ids)

    fmt = deployment.prompt_format
    prompt_ids = PromptTokens(tokenizer, fmt, rubric, [d.name for d in dims])

    def batch(paths):
        prompts, loras = [], []
        images = [normalize_bytes(path.read_bytes(), profile.image_size, recipe=fmt.image_recipe) for path in paths]
        for i, d in enumerate(dims):  # dimension-major, as the benchmark submits them
            for image in images:
                prompts.append(
                    {"prompt_token_ids": prompt_ids.for_dimension(d.name), "multi_modal_data": {"image": image}}
                )
                loras.append(
                    None
                    if args.base
                    else LoRARequest(deployment.module_names[d.name], i + 1, str(deployment.adapters[d.name].path))
                )
        return prompts, loras

    llm.generate(*batch(warm)[:1], params, lora_request=batch(warm)[1], use_tqdm=False)
    prompts, loras = batch(images)
    llm.start_profile()
    started = time.perf_counter()
    llm.generate(prompts, params, lora_request=loras, use_tqdm=False)
    elapsed = time.perf_counter() - started
    llm.stop_profile()
    time.sleep(2)
    print(f"profiled {len(prompts)} requests in {elapsed:.2f} s (profiler on)")
    for table in sorted(out.glob("*.profiler_out.txt")):
        print(f"--- {table}")
        print("\n".join(table.read_text().splitlines()[:40]))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

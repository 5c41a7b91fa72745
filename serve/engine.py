"""The vLLM engine's arguments and environment for a profile and deployment set.

One definition, used by the engine replica (`serve.engine_server`, vLLM's `AsyncLLM`), the
benchmark's offline engine and `loadtest/profile_engine.py` (vLLM's `LLM`): LoRA on, max LoRAs
>= adapters, max rank, processed logprobs, vLLM's own generation config, image pixel bounds,
memory settings, prefix caching and block size. The flags are vLLM's engine flags, parsed by
vLLM's own parser (so `engine.extra_args` takes any engine flag, as on vLLM's command line).

Each LoRA module is named by its content (`realism@<12 hex of its weights hash>`,
`Deployment.module_names`): vLLM keys its prefix cache by the LoRA name, so changed weights
must mean a changed name. The engine is no network service: it runs inside a Ray Serve replica
and is reached through Ray handles only.
"""

from __future__ import annotations

import json
import os

from adapters.errors import ConfigError, KidsArtError
from adapters.manifest import Deployment
from adapters.profiles import Profile


class EngineStartError(KidsArtError):
    kind = "engine_start_failed"


def engine_cli_args(profile: Profile, deployment: Deployment) -> list[str]:
    """vLLM's engine flags for this profile and deployment (no server flags: the engine listens on nothing)."""
    engine = profile.engine
    modules = deployment.lora_modules
    if engine.max_loras < len(modules):
        raise ConfigError(
            f"profile {profile.name!r}: engine.max_loras={engine.max_loras} is below the {len(modules)} "
            f"LoRA modules of its deployment ({', '.join(modules)}); the fan-out would be serialised"
        )
    args = [
        "--model",
        str(profile.base.resolved_path),
        "--served-model-name",
        profile.base.model_id,
        "--dtype",
        profile.resolved_dtype,
        "--max-model-len",
        str(engine.max_model_len),
        "--max-num-seqs",
        str(engine.max_num_seqs),
        "--gpu-memory-utilization",
        str(engine.gpu_memory_utilization),
        "--tensor-parallel-size",
        str(engine.tensor_parallel_size),
        "--enable-lora",
        "--max-loras",
        str(engine.max_loras),
        "--max-cpu-loras",
        str(max(engine.max_cpu_loras, engine.max_loras)),
        "--max-lora-rank",
        str(engine.max_lora_rank),
        "--logprobs-mode",
        "processed_logprobs",
        "--max-logprobs",
        "20",
        "--generation-config",
        "vllm",
        "--limit-mm-per-prompt",
        json.dumps({"image": 1, "video": 0}),
        "--mm-processor-kwargs",
        json.dumps({"min_pixels": engine.min_pixels, "max_pixels": engine.max_pixels}),
        "--mm-processor-cache-gb",
        str(engine.mm_processor_cache_gb),
    ]
    args.append("--enable-prefix-caching" if engine.enable_prefix_caching else "--no-enable-prefix-caching")
    if engine.block_size is not None:
        args += ["--block-size", str(engine.block_size)]
    if engine.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(engine.max_num_batched_tokens)]
    args.extend(engine.extra_args)
    return args


def parse_engine_args(cli_args: list[str], offline: bool = False):
    """vLLM's `AsyncEngineArgs` (or `EngineArgs` for the offline `LLM`) from engine flags, stats on."""
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cls = EngineArgs if offline else AsyncEngineArgs
    namespace = cls.add_cli_args(FlexibleArgumentParser()).parse_args(cli_args)
    args = cls.from_cli_args(namespace)
    args.disable_log_stats = False  # the prefix-cache and prefill counters (bench, /metrics)
    return args


def lora_paths(deployment: Deployment) -> dict[str, str]:
    """Content-addressed LoRA module name -> adapter folder, for every module served (dimensions and feedback)."""
    return {name: str(adapter.path) for name, adapter in deployment.lora_modules.items()}


def engine_env(profile: Profile) -> dict[str, str]:
    """The engine's environment beyond the caller's: vLLM's CPU settings and the kidsart vLLM plugin's switches.

    Given to the engine replica as its runtime environment (Ray starts its worker process with it)."""
    env: dict[str, str] = {}
    if profile.engine.device == "cpu" and profile.engine.cpu_kvcache_space_gib is not None:
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.engine.cpu_kvcache_space_gib)
    if profile.engine.device == "cpu" and profile.engine.reserved_cpus is not None:
        env["VLLM_CPU_NUM_OF_RESERVED_CPU"] = str(profile.engine.reserved_cpus)
    env.update(allocator_env(profile))
    # --- kidsart vLLM plugin (serve/vllm_plugin, entry point vllm.general_plugins) ---
    if profile.engine.device == "cpu" and profile.engine.fast_lora_ops:
        env["KIDSART_FAST_LORA_OPS"] = "1"
    env["KIDSART_ENGINE_DIES_WITH_PARENT"] = "1"  # vLLM's processes end with their replica's
    # --- end kidsart vLLM plugin ---
    # vLLM's worker joins a torch process group through a TCP store on this address; loopback unless the
    # operator says otherwise (a multi-GPU engine on one machine needs nothing else)
    env["VLLM_HOST_IP"] = os.environ.get("VLLM_HOST_IP", "127.0.0.1")
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env.update(profile.engine.env)
    return env


def allocator_env(profile: Profile) -> dict[str, str]:
    """The memory-allocator settings of the engine's processes (the benchmark's reference gets the same)."""
    return {"GLIBC_TUNABLES": profile.engine.glibc_tunables} if profile.engine.glibc_tunables else {}

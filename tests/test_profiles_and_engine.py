"""Profiles load strictly; the engine's arguments carry every flag the design depends on."""

import json
from pathlib import Path

import pytest

from adapters.errors import ConfigError
from adapters.manifest import load_profile_deployment
from adapters.profiles import EngineAutoscaling, EngineSettings, load_profile
from serve.engine import engine_cli_args, engine_env, lora_paths, parse_engine_args


@pytest.mark.parametrize("name", ["tiny", "production"])
def test_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name
    assert profile.engine.max_loras >= 9


def test_production_is_a_config_switch_to_the_7b_on_gpu():
    profile = load_profile("production")
    assert profile.base.source == "hub" and profile.base.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert profile.dtype == "bfloat16" and profile.engine.device == "cuda"


def test_unknown_profile_and_extra_fields(tmp_path):
    with pytest.raises(ConfigError, match="profiles"):
        load_profile("no-such-profile")
    text = load_profile("tiny").model_dump_json()
    data = json.loads(text)
    data["engine"]["typo_field"] = 1
    path = tmp_path / "p.yaml"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="typo_field"):
        load_profile(path)


SERVER_FLAGS = ("--host", "--port", "--lora-modules", "--middleware", "--disable-uvicorn-access-log", "--api-key")


def test_engine_cli_args_flags(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    args = engine_cli_args(tiny_profile, deployment)
    joined = " ".join(args)
    for flag in [
        "--enable-lora",
        "--max-loras 10",
        "--max-lora-rank 8",
        "--logprobs-mode processed_logprobs",
        "--generation-config vllm",
        "--dtype float32",
        "--gpu-memory-utilization 0.3",
    ]:
        assert flag in joined
    # engine flags only: the engine runs inside a Ray Serve replica and listens on nothing
    assert not [a for a in args if a.startswith(SERVER_FLAGS)], args
    assert json.loads(args[args.index("--mm-processor-kwargs") + 1]) == {"min_pixels": 50176, "max_pixels": 50176}


def test_lora_paths_are_content_addressed_and_cover_dimensions_and_feedback(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    paths = lora_paths(deployment)
    # one module per dimension plus the feedback adapter, which max_loras must also cover
    assert sorted(n.split("@")[0] for n in paths) == sorted([*deployment.dimensions, "feedback"])
    assert sorted(paths) == sorted(deployment.module_names.values())  # content-addressed: dimension@weights hash
    for name, path in paths.items():
        module = name.split("@")[0]
        adapter = deployment.feedback if module == "feedback" else deployment.adapters[module]
        assert path == str(adapter.path) and Path(path).is_dir()
    assert len(paths) <= tiny_profile.engine.max_loras


def test_engine_env_is_only_the_engines_extra_environment(tiny_profile, monkeypatch):
    monkeypatch.setenv("KIDSART_TEST_UNRELATED", "1")
    monkeypatch.setenv("KIDSART_API_KEYS", "k" * 24)
    monkeypatch.setenv("VLLM_API_KEY", "v" * 24)
    monkeypatch.delenv("VLLM_HOST_IP", raising=False)
    env = engine_env(tiny_profile)
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1" and env["KIDSART_FAST_LORA_OPS"] == "1"
    assert env["VLLM_HOST_IP"] == "127.0.0.1" and env["HF_HUB_OFFLINE"] == "1"
    # not a copy of the caller's environment (Ray's runtime env adds it to the worker's own), and no key in it
    for name in ("KIDSART_TEST_UNRELATED", "KIDSART_API_KEYS", "VLLM_API_KEY", "PATH", "HOME"):
        assert name not in env, name
    assert not [v for v in env.values() if "k" * 24 in v or "v" * 24 in v]
    monkeypatch.setenv("VLLM_HOST_IP", "10.0.0.7")  # the operator's address for vLLM's process group is kept
    assert engine_env(tiny_profile)["VLLM_HOST_IP"] == "10.0.0.7"
    custom = tiny_profile.model_copy(
        update={"engine": tiny_profile.engine.model_copy(update={"env": {"X_ENGINE": "2"}})}
    )
    assert engine_env(custom)["X_ENGINE"] == "2"


def test_engine_cli_args_parse_into_vllms_engine_arguments(tiny_profile):
    from vllm.engine.arg_utils import AsyncEngineArgs, EngineArgs

    deployment = load_profile_deployment(tiny_profile)
    args = engine_cli_args(tiny_profile, deployment)
    parsed = parse_engine_args(args)
    assert type(parsed) is AsyncEngineArgs
    assert parsed.enable_lora is True and parsed.max_loras == 10 and parsed.max_lora_rank == 8
    assert parsed.block_size == 32 and parsed.enable_prefix_caching is True
    assert parsed.logprobs_mode == "processed_logprobs" and parsed.dtype == "float32"
    assert parsed.model == str(tiny_profile.base.resolved_path) and parsed.disable_log_stats is False
    offline = parse_engine_args(args, offline=True)
    assert type(offline) is EngineArgs
    assert offline.enable_lora is True and offline.max_loras == 10 and offline.block_size == 32
    assert offline.logprobs_mode == "processed_logprobs"
    with pytest.raises(SystemExit):  # a server flag is no engine flag: vLLM's parser refuses it
        parse_engine_args([*args, "--port", "8100"])


def test_too_few_max_loras_is_refused(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    profile = tiny_profile.model_copy(update={"engine": tiny_profile.engine.model_copy(update={"max_loras": 2})})
    with pytest.raises(ConfigError, match="max_loras=2"):
        engine_cli_args(profile, deployment)
    # nine slots are enough for the nine dimensions but not for the feedback adapter beside them
    profile = tiny_profile.model_copy(update={"engine": tiny_profile.engine.model_copy(update={"max_loras": 9})})
    with pytest.raises(ConfigError, match="max_loras=9 is below the 10 LoRA modules.*feedback"):
        engine_cli_args(profile, deployment)
    assert "--max-loras" in engine_cli_args(profile, deployment.model_copy(update={"feedback": None}))


def test_production_engine_args_are_gpu_bf16_without_cpu_settings(tiny_profile):
    """As far as a CPU can check production: the engine flags a GPU replica would run with."""
    production = load_profile("production")
    deployment = load_profile_deployment(tiny_profile)  # any nine adapters: the flags only need their names/paths
    joined = " ".join(engine_cli_args(production, deployment))
    assert "--model /models/Qwen2.5-VL-7B-Instruct" in joined
    assert "--dtype bfloat16" in joined and "--gpu-memory-utilization 0.9" in joined
    assert "--max-loras 10" in joined and "--logprobs-mode processed_logprobs" in joined
    env = engine_env(production)
    assert "VLLM_CPU_KVCACHE_SPACE" not in env and "KIDSART_FAST_LORA_OPS" not in env


def test_production_engine_replicas_take_a_gpu_each_and_autoscale():
    engine = load_profile("production").engine
    assert engine.num_gpus == 1 and engine.tensor_parallel_size == 1
    assert engine.autoscaling == EngineAutoscaling(min_replicas=1, max_replicas=8, target_ongoing_requests=64)
    assert EngineSettings.model_validate(engine.model_dump()) == engine
    tiny = load_profile("tiny").engine
    assert tiny.autoscaling is None and tiny.num_replicas == 1 and tiny.num_gpus == 0
    with pytest.raises(ValueError, match="min_replicas 3 is above max_replicas 2"):
        EngineAutoscaling(min_replicas=3, max_replicas=2)
    assert EngineAutoscaling(min_replicas=0, max_replicas=2).min_replicas == 0  # scale to zero is allowed


def test_cpu_block_size_and_engine_cpu_settings(tiny_profile):
    # the bench serves nine score adapters (its own deployment has no feedback adapter)
    deployment = load_profile_deployment(tiny_profile).model_copy(update={"feedback": None})
    bench = load_profile("bench")
    args = engine_cli_args(bench, deployment)
    assert args[args.index("--block-size") + 1] == "32" and "--enable-prefix-caching" in args
    # one step cap for the replica's engine and the benchmark's offline engine (vLLM's defaults differ)
    assert args[args.index("--max-num-batched-tokens") + 1] == "2048"
    assert "--max-num-batched-tokens" not in engine_cli_args(tiny_profile, deployment)
    env = engine_env(bench)
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and "mmap_threshold" in env["GLIBC_TUNABLES"]
    with pytest.raises(ValueError, match="multiples of 32"):
        bench.engine.model_validate({**bench.engine.model_dump(), "block_size": 16})


def test_extends_overrides_key_by_key_and_refuses_cycles(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: bench\nname: child\ndtype: auto\nengine: {num_replicas: 3}\n")
    profile = load_profile(child)
    bench = load_profile("bench")
    assert profile.name == "child" and profile.dtype == "auto" and profile.engine.num_replicas == 3
    assert profile.engine.block_size == bench.engine.block_size and profile.base == bench.base
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\nname: loop\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile(loop)
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("extends: no-such-profile\n")
    with pytest.raises(ConfigError, match="no-such-profile"):
        load_profile(orphan)


@pytest.mark.parametrize(
    ("flags", "expected"), [(["avx2", "avx512f", "avx512_bf16"], "bfloat16"), (["avx2", "fma"], "float32")]
)
def test_dtype_auto_follows_native_bf16(monkeypatch, flags, expected):
    import adapters.machine

    monkeypatch.setattr(adapters.machine, "cpu_model_and_flags", lambda: ("test cpu", flags))
    profile = load_profile("bench-auto")
    assert profile.dtype == "auto" and profile.resolved_dtype == expected
    assert load_profile("bench").resolved_dtype == "float32"
    gpu = profile.model_copy(update={"engine": profile.engine.model_copy(update={"device": "cuda"})})
    assert gpu.resolved_dtype == "bfloat16"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("router: {max_inflight_images: 0}", "max_inflight_images"),  # would make every request wait forever
        ("router: {retry_after_s: -1}", "retry_after_s"),
        ("router: {max_image_bytes: 0}", "max_image_bytes"),
        ("engine: {num_replicas: 0}", "num_replicas"),
        ("engine: {autoscaling: {min_replicas: 3, max_replicas: 2}}", "min_replicas 3 is above max_replicas 2"),
        ("engine: {health_check_timeout_s: 0}", "health_check_timeout_s"),
        ("engine: {max_outage_s: 0}", "max_outage_s"),
        ("engine: {port: 8100}", "port"),  # the engine listens on nothing any more: a leftover setting is refused
        ("engine: {max_loras: 10, max_cpu_loras: 4}", "max_cpu_loras 4 is below max_loras 10"),
        ("engine: {min_pixels: 90000, max_pixels: 50176}", "min_pixels 90000 is above max_pixels"),
        ("feedback: {max_tokens: 0}", "max_tokens"),
        ("image_size: 0", "image_size"),
    ],
)
def test_numeric_settings_are_bounded_with_a_clear_error(tmp_path, override, named):
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: tiny\nname: bad\n{override}\n")
    with pytest.raises(ConfigError, match=named):
        load_profile(path)


def test_serve_refuses_an_out_of_bounds_setting_at_start_up(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nname: bad\nrouter: {max_inflight_images: 0}\n")
    kidsart = str(Path(sys.executable).with_name("kidsart"))
    result = subprocess.run([kidsart, "serve", "--profile", str(path)], capture_output=True, text=True, timeout=120)
    assert (
        result.returncode == 2
        and "max_inflight_images" in result.stderr
        and "greater than or equal to 1" in result.stderr
    )

"""Profiles load strictly; the engine command carries every flag the design depends on."""
import json

import pytest

from adapters.errors import ConfigError
from adapters.manifest import load_profile_deployment
from adapters.profiles import load_profile
from serve.engine import engine_command, engine_env


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


def test_engine_command_flags(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    command = engine_command(tiny_profile, deployment)
    joined = " ".join(command)
    for flag in ["--enable-lora", "--max-loras 10", "--max-lora-rank 8", "--logprobs-mode processed_logprobs",
                 "--generation-config vllm", "--dtype float32", "--gpu-memory-utilization 0.3"]:
        assert flag in joined
    modules = command[command.index("--lora-modules") + 1: command.index("--logprobs-mode")]
    # one module per dimension plus the feedback adapter, which max_loras must also cover
    names = [json.loads(m)["name"] for m in modules]
    assert sorted(n.split("@")[0] for n in names) == sorted([*deployment.dimensions, "feedback"])
    assert sorted(names) == sorted(deployment.module_names.values())  # content-addressed: dimension@weights hash
    assert json.loads(command[command.index("--mm-processor-kwargs") + 1]) == {"min_pixels": 50176, "max_pixels": 50176}
    assert engine_env(tiny_profile)["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_too_few_max_loras_is_refused(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    profile = tiny_profile.model_copy(update={"engine": tiny_profile.engine.model_copy(update={"max_loras": 2})})
    with pytest.raises(ConfigError, match="max_loras=2"):
        engine_command(profile, deployment)
    # nine slots are enough for the nine dimensions but not for the feedback adapter beside them
    profile = tiny_profile.model_copy(update={"engine": tiny_profile.engine.model_copy(update={"max_loras": 9})})
    with pytest.raises(ConfigError, match="max_loras=9 is below the 10 LoRA modules.*feedback"):
        engine_command(profile, deployment)


def test_production_engine_command_is_gpu_bf16_without_cpu_settings(tiny_profile):
    """As far as a CPU can check production: the command a GPU host would run."""
    production = load_profile("production")
    deployment = load_profile_deployment(tiny_profile)  # any nine adapters: the command only needs their names/paths
    command = engine_command(production, deployment)
    joined = " ".join(command)
    assert "--model /models/Qwen2.5-VL-7B-Instruct" in joined
    assert "--dtype bfloat16" in joined and "--gpu-memory-utilization 0.9" in joined
    assert "--max-loras 10" in joined and "--logprobs-mode processed_logprobs" in joined
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine_env(production) or production.engine.cpu_kvcache_space_gib is None


def test_cpu_block_size_and_engine_cpu_settings(tiny_profile):
    # the bench serves nine score adapters (its own deployment has no feedback adapter)
    deployment = load_profile_deployment(tiny_profile).model_copy(update={"feedback": None})
    bench = load_profile("bench")
    command = engine_command(bench, deployment)
    assert command[command.index("--block-size") + 1] == "32" and "--enable-prefix-caching" in command
    # one step cap for the server and the benchmark's offline engine (vLLM's defaults differ)
    assert command[command.index("--max-num-batched-tokens") + 1] == "2048"
    assert "--max-num-batched-tokens" not in engine_command(tiny_profile, deployment)
    env = engine_env(bench)
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0" and "mmap_threshold" in env["GLIBC_TUNABLES"]
    with pytest.raises(ValueError, match="multiples of 32"):
        bench.engine.model_validate({**bench.engine.model_dump(), "block_size": 16})


def test_extends_overrides_key_by_key_and_refuses_cycles(tmp_path):
    child = tmp_path / "child.yaml"
    child.write_text("extends: bench\nname: child\ndtype: auto\nengine: {port: 9999}\n")
    profile = load_profile(child)
    bench = load_profile("bench")
    assert profile.name == "child" and profile.dtype == "auto" and profile.engine.port == 9999
    assert profile.engine.block_size == bench.engine.block_size and profile.base == bench.base
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"extends: {loop}\nname: loop\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_profile(loop)
    orphan = tmp_path / "orphan.yaml"
    orphan.write_text("extends: no-such-profile\n")
    with pytest.raises(ConfigError, match="no-such-profile"):
        load_profile(orphan)


@pytest.mark.parametrize(("flags", "expected"), [(["avx2", "avx512f", "avx512_bf16"], "bfloat16"), (["avx2", "fma"], "float32")])
def test_dtype_auto_follows_native_bf16(monkeypatch, flags, expected):
    import adapters.machine

    monkeypatch.setattr(adapters.machine, "cpu_model_and_flags", lambda: ("test cpu", flags))
    profile = load_profile("bench-auto")
    assert profile.dtype == "auto" and profile.resolved_dtype == expected
    assert load_profile("bench").resolved_dtype == "float32"
    gpu = profile.model_copy(update={"engine": profile.engine.model_copy(update={"device": "cuda"})})
    assert gpu.resolved_dtype == "bfloat16"


@pytest.mark.parametrize(("override", "named"), [
    ("router: {max_inflight_images: 0}", "max_inflight_images"),  # would make every request wait forever
    ("router: {retry_after_s: -1}", "retry_after_s"),
    ("router: {max_image_bytes: 0}", "max_image_bytes"),
    ("engine: {port: 70000}", "port"),
    ("engine: {max_loras: 10, max_cpu_loras: 4}", "max_cpu_loras 4 is below max_loras 10"),
    ("engine: {min_pixels: 90000, max_pixels: 50176}", "min_pixels 90000 is above max_pixels"),
    ("feedback: {max_tokens: 0}", "max_tokens"),
    ("image_size: 0", "image_size"),
])
def test_numeric_settings_are_bounded_with_a_clear_error(tmp_path, override, named):
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: tiny\nname: bad\n{override}\n")
    with pytest.raises(ConfigError, match=named):
        load_profile(path)


def test_serve_refuses_an_out_of_bounds_setting_at_start_up(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nname: bad\nrouter: {max_inflight_images: 0}\n")
    kidsart = str(Path(sys.executable).with_name("kidsart"))
    result = subprocess.run([kidsart, "serve", "--profile", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "max_inflight_images" in result.stderr and "greater than or equal to 1" in result.stderr

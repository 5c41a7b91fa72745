"""`kidsart import-adapters`: the KidsArtBench release layout imported, checked and refused with every problem named."""

from __future__ import annotations

import json
import shutil

import pytest

from adapters.importer import ImportProblems, import_adapters
from adapters.manifest import load_deployment
from adapters.rubric import load_rubric
from tests.kidsartbench_release import fabricate

DIMS = load_rubric("kidsartbench").dimension_names  # the nine, in the rubric's order


@pytest.fixture(scope="module")
def release(tiny_profile, tmp_path_factory):
    """A release folder on the tiny base: their LoraConfig, both key spellings."""
    out = tmp_path_factory.mktemp("release")
    return fabricate(tiny_profile.base.resolved_path, out, DIMS, seed=20261202, old_keys=("realism", "line_texture"))


def _copy(release, tmp_path):
    target = tmp_path / "src"
    shutil.copytree(release, target)
    return target


def test_import_writes_manifests_and_a_deployment_in_the_release_format(release, tiny_profile, tmp_path):
    from safetensors.torch import load_file

    path = import_adapters(release, layout="kidsartbench", profile=tiny_profile, out=tmp_path / "out")
    deployment = load_deployment(path, max_lora_rank=8, base_dir=tiny_profile.base.resolved_path)
    assert deployment.prompt_format.name == "kidsartbench-release"
    assert deployment.dimensions == DIMS
    for dim in DIMS:
        adapter = deployment.adapters[dim]
        manifest = adapter.manifest
        assert manifest.provenance.method == "imported" and manifest.prompt_format == "kidsartbench-release"
        source = manifest.provenance.source
        assert source.layout == "kidsartbench" and source.checkpoint == "best_model"
        assert source.folder.endswith(f"dimension_{dim}/best_model")
        assert set(source.files) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
        # same values, canonical key spelling whichever spelling the source used
        theirs = load_file(str(release / f"dimension_{dim}" / "best_model" / "adapter_model.safetensors"))
        ours = load_file(str(adapter.path / "adapter_model.safetensors"))
        assert all(k.startswith("base_model.model.model.language_model.layers.") for k in ours)
        assert sorted(v.sum().item() for v in theirs.values()) == sorted(v.sum().item() for v in ours.values())
        assert manifest.lora.rank == 8 and manifest.lora.alpha == 16
    realism = deployment.adapters["realism"].manifest.provenance.notes
    assert "respelled" in realism and "respelled" not in deployment.adapters["imagination"].manifest.provenance.notes


def test_last_step_is_taken_when_there_is_no_best_model(release, tiny_profile, tmp_path):
    src = _copy(release, tmp_path)
    shutil.rmtree(src / "dimension_imagination" / "best_model")
    path = import_adapters(src, layout="kidsartbench", profile=tiny_profile, out=tmp_path / "out")
    checkpoints = {d: a.manifest.provenance.source.checkpoint for d, a in load_deployment(path).adapters.items()}
    assert checkpoints["imagination"] == "last_step" and checkpoints["realism"] == "best_model"


def test_every_problem_is_named_and_nothing_is_written(release, tiny_profile, tmp_path):
    src = _copy(release, tmp_path)
    shutil.rmtree(src / "dimension_transformation")  # missing dimension
    (src / "dimension_colour").mkdir()  # unknown dimension
    config_path = src / "dimension_realism" / "best_model" / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "r": 64}))  # rank above the engine's maximum
    config_path = src / "dimension_deformation" / "best_model" / "adapter_config.json"
    config_path.write_text(json.dumps({**config, "target_modules": ["q_proj", "qkv"]}))  # vision-tower target
    config_path = src / "dimension_imagination" / "best_model" / "adapter_config.json"
    config_path.write_text(json.dumps({**config, "base_model_name_or_path": "Qwen/Qwen2-VL-2B-Instruct"}))  # other base
    (src / "dimension_line_texture" / "best_model" / "adapter_model.safetensors").write_bytes(b"not a tensor file")
    out = tmp_path / "out"
    with pytest.raises(ImportProblems) as caught:
        import_adapters(src, layout="kidsartbench", profile=tiny_profile, out=out)
    text = str(caught.value)
    assert "missing dimension folder(s): dimension_transformation" in text
    assert "dimension_colour: 'colour' is not a dimension of the rubric" in text
    assert "dimension_realism: LoRA rank 64 is above the engine's max_lora_rank 8" in text
    assert "dimension_deformation: target_modules ['q_proj', 'qkv'] reach the vision tower" in text
    assert (
        "dimension_imagination: made for base Qwen/Qwen2-VL-2B-Instruct, but the profile's base is "
        "kidsart/tiny-qwen2.5-vl" in text
    )
    assert "dimension_line_texture/best_model/adapter_model.safetensors is unreadable" in text
    assert len(caught.value.problems) == 6, "\n".join(caught.value.problems)
    assert not out.exists() and not list(tmp_path.glob(".out.importing-*"))


def test_weights_made_for_another_base_are_refused_by_shape(release, tiny_profile, tmp_path):
    """A base whose name we cannot check (an unreachable local path, --trust-base) is still caught by its shapes."""
    from safetensors.torch import load_file, save_file

    src = _copy(release, tmp_path)
    folder = src / "dimension_realism" / "best_model"
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in tensors if k.endswith("q_proj.lora_A.weight"))
    tensors[key] = tensors[key].new_zeros((8, 3584))  # a 7B hidden size
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "/data/models/qwen7b"})
    )
    with pytest.raises(
        ImportProblems,
        match=r"is \(8, 3584\), but on the profile's base \(kidsart/tiny-qwen2.5-vl\) "
        r"it must be \(8, \d+\)",
    ):
        import_adapters(src, layout="kidsartbench", profile=tiny_profile, out=tmp_path / "out", trust_base=True)


def test_arguments_are_checked(release, tiny_profile, tmp_path):
    from adapters.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown source layout 'lorax'"):
        import_adapters(release, layout="lorax", profile=tiny_profile, out=tmp_path / "a")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        import_adapters(release, layout="kidsartbench", profile=tiny_profile, out=tmp_path / "b")
    with pytest.raises(ImportProblems, match="is not a folder"):
        import_adapters(tmp_path / "nowhere", layout="kidsartbench", profile=tiny_profile, out=tmp_path / "c")


def _seven_b_release(root, dims):
    """Their adapter files for the 7B, by shape only (bf16 zeros; layers 0 and 27 of 28 to stay small)."""
    import torch
    from safetensors.torch import save_file

    hidden, kv = 3584, 512  # Qwen2.5-VL-7B: 28 heads of 128, 4 KV heads
    config = {
        "peft_type": "LORA",
        "r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.05,
        "bias": "none",
        "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "v_proj", "k_proj", "o_proj"],
        "base_model_name_or_path": "/data/Qwen2.5-VL-7B-Instruct",
    }
    for dim in dims:
        folder = root / f"dimension_{dim}" / "best_model"
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text(json.dumps(config))
        tensors = {}
        for layer in (0, 27):
            for module, out in (("q_proj", hidden), ("k_proj", kv), ("v_proj", kv), ("o_proj", hidden)):
                key = f"base_model.model.model.layers.{layer}.self_attn.{module}"
                tensors[f"{key}.lora_A.weight"] = torch.zeros(8, hidden, dtype=torch.bfloat16)
                tensors[f"{key}.lora_B.weight"] = torch.zeros(out, 8, dtype=torch.bfloat16)
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    return root


def test_production_import_on_cpu_gives_manifests_a_deployment_and_the_engine_args(tmp_path, caplog):
    """What a CPU can check of the production import: the 7B base is not here, so names are checked, sizes not."""
    from adapters.profiles import load_profile
    from serve.engine import engine_cli_args, lora_paths

    production = load_profile("production")
    src = _seven_b_release(tmp_path / "release", DIMS)
    with caplog.at_level("WARNING"):
        path = import_adapters(src, layout="kidsartbench", profile=production, out=tmp_path / "imported")
    assert "tensor shapes were not checked" in caplog.text
    deployment = load_deployment(path, max_lora_rank=production.engine.max_lora_rank)
    assert deployment.base.model_id == "Qwen/Qwen2.5-VL-7B-Instruct"
    assert deployment.base.content_hash == "unhashed:Qwen/Qwen2.5-VL-7B-Instruct"
    assert deployment.prompt_format.name == "kidsartbench-release"
    args = engine_cli_args(production, deployment)
    assert args[args.index("--served-model-name") + 1] == "Qwen/Qwen2.5-VL-7B-Instruct"
    modules = lora_paths(deployment)
    names = list(modules)
    assert [n.split("@")[0] for n in names] == DIMS and all(len(n.split("@")[1]) == 12 for n in names)
    assert names == [deployment.module_names[d] for d in DIMS]
    assert all(modules[n] == str(deployment.adapters[n.split("@")[0]].path) for n in names)
    assert "--max-lora-rank" in args and args[args.index("--max-lora-rank") + 1] == "8"

"""The tiny base is a committed fixture: what is deterministic everywhere is checked exactly, the rest by `--check`."""

from __future__ import annotations

import shutil

import pytest
import yaml


def test_committed_base_matches_its_recipe_and_deployments(tiny_profile):
    from adapters.base_builder import TOKENIZER_CORPUS
    from adapters.hashing import file_hash
    from adapters.manifest import BASE_MANIFEST_NAME, load_profile_deployment, read_base_ref

    base = tiny_profile.base.resolved_path
    manifest = yaml.safe_load((base / BASE_MANIFEST_NAME).read_text())
    assert manifest["recipe"] == tiny_profile.base.build.model_dump(mode="json")
    assert manifest["tokenizer_corpus"]["sha256"] == file_hash(TOKENIZER_CORPUS)
    assert manifest["made_on"]["cpu_flags"] and manifest["made_on"]["cpu_model"]
    recipe = tiny_profile.base.build.pretrain
    assert manifest["pretraining"]["vision"]["steps"] == recipe.vision.steps
    assert manifest["pretraining"]["captions"]["steps"] == recipe.captions.steps
    # the base sees: a ridge read-out of its vision tower's pooled tokens predicts held-out rubric labels
    assert manifest["pretraining"]["vision"]["probe_after"]["mean"] >= 0.6
    assert read_base_ref(base).content_hash == manifest["content_hash"]
    # the deployment (and so every committed adapter) is bound to the committed bytes
    assert load_profile_deployment(tiny_profile).base.content_hash == manifest["content_hash"]


def test_tokenizer_and_config_regenerate_byte_identical(tiny_profile, tmp_path):
    """No training is involved in these, so they are the same on every machine (checked here on this one)."""
    from adapters.base_builder import random_base

    model, processor = random_base(tiny_profile)
    model.save_pretrained(tmp_path)  # as the builder saves (config.json carries `architectures`)
    processor.save_pretrained(tmp_path)
    base = tiny_profile.base.resolved_path
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (base / name).read_bytes(), name


def test_build_base_never_writes_over_the_fixture(tiny_profile):
    from adapters.base_builder import build_random_base
    from adapters.errors import ConfigError
    from train.base import build_pretrained_base

    with pytest.raises(ConfigError, match="committed fixture"):
        build_pretrained_base(tiny_profile, tiny_profile.base.resolved_path)
    with pytest.raises(ConfigError, match="fixture"):
        build_random_base(tiny_profile)


@pytest.fixture()
def rebuild_copy(tiny_profile, tmp_path):
    copy = tmp_path / "rebuild"
    shutil.copytree(tiny_profile.base.resolved_path, copy)
    return copy


def _fake_scores(monkeypatch, shift: float):
    import train.base as base_mod

    def scores(profile, base_dir):
        offset = shift if base_dir.name == "rebuild" else 0.0
        return {"color_richness": [2.0 + offset, 3.0 + offset]}

    monkeypatch.setattr(base_mod, "_adapter_scores", scores)


def _pretend_cpu(monkeypatch, same: bool, tiny_profile):
    import train.base as base_mod

    recorded = yaml.safe_load((tiny_profile.base.resolved_path / "base_manifest.yaml").read_text())["made_on"]
    flags = recorded["cpu_flags"] if same else [*recorded["cpu_flags"], "avx_pretend_other"]
    monkeypatch.setattr(base_mod, "cpu_model_and_flags", lambda: ("pretend CPU", flags))


def test_check_identical_copy_passes_with_real_scores(tiny_profile, rebuild_copy, monkeypatch):
    from train.base import check_rebuild

    _pretend_cpu(monkeypatch, True, tiny_profile)
    result = check_rebuild(tiny_profile, rebuild_copy)
    assert result["ok"] and result["same_cpu_flags"] and result["weights"]["identical"]
    assert all(result["files_identical"].values())
    diffs = result["adapter_scores"]["difference_by_dimension"]
    assert len(diffs) == 9 and all(d["max_abs"] == 0 for d in diffs.values())


def _perturb(rebuild_copy):
    from safetensors.numpy import load_file, save_file

    tensors = load_file(rebuild_copy / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-6
    save_file(tensors, rebuild_copy / "model.safetensors", metadata={"format": "pt"})
    return name


@pytest.mark.parametrize("same_cpu", [True, False])
def test_check_weight_difference_fails_only_on_the_same_cpu(tiny_profile, rebuild_copy, monkeypatch, same_cpu):
    from train.base import check_rebuild

    name = _perturb(rebuild_copy)
    _pretend_cpu(monkeypatch, same_cpu, tiny_profile)
    _fake_scores(monkeypatch, 0.01)
    result = check_rebuild(tiny_profile, rebuild_copy)
    assert result["ok"] is (not same_cpu)
    assert result["weights"]["worst_tensor"] == name and 0 < result["weights"]["max_abs_diff"] < 1e-5
    assert result["adapter_scores"]["difference_by_dimension"]["color_richness"]["max_abs"] == pytest.approx(0.01)
    assert ("CPU differs" in result["case"]) is (not same_cpu)


def test_check_tokenizer_difference_fails_on_any_cpu(tiny_profile, rebuild_copy, monkeypatch):
    from train.base import check_rebuild

    (rebuild_copy / "tokenizer.json").write_text(
        (rebuild_copy / "tokenizer.json").read_text().replace("colour", "color", 1)
    )
    _pretend_cpu(monkeypatch, False, tiny_profile)
    _fake_scores(monkeypatch, 0.0)
    result = check_rebuild(tiny_profile, rebuild_copy)
    assert not result["ok"] and result["files_identical"]["tokenizer.json"] is False

"""Deployment-set validation: every broken case is a ConfigError naming the file and problem."""

import re
import shutil

import pytest
import yaml

from adapters.errors import ConfigError
from adapters.manifest import load_deployment, load_profile_deployment


@pytest.fixture()
def deployment_copy(tiny_profile, tmp_path):
    """A copy of the tiny deployment set and its adapters in tmp_path."""
    source = tiny_profile.deployment_path
    spec = yaml.safe_load(source.read_text())
    adapters = []
    for entry in spec["adapters"]:
        src = (source.parent / entry).resolve()
        dst = tmp_path / "adapters" / src.name
        shutil.copytree(src, dst)
        adapters.append(f"adapters/{src.name}")
    spec["adapters"] = adapters
    if spec.get("feedback_adapter"):
        src = (source.parent / spec["feedback_adapter"]).resolve()
        shutil.copytree(src, tmp_path / "adapters" / src.name)
        spec["feedback_adapter"] = f"adapters/{src.name}"
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, spec


def _rewrite(path, spec):
    path.write_text(yaml.safe_dump(spec))


def _edit_manifest(adapter_dir, **changes):
    manifest_path = adapter_dir / "manifest.yaml"
    data = yaml.safe_load(manifest_path.read_text())
    for key, value in changes.items():
        data[key] = value
    manifest_path.write_text(yaml.safe_dump(data))


def test_shipped_tiny_deployment_is_valid(tiny_profile):
    deployment = load_profile_deployment(tiny_profile)
    assert deployment.dimensions == deployment.rubric.dimension_names
    assert len({a.manifest.label for a in deployment.adapters.values()}) == 9
    assert deployment.feedback is not None and deployment.feedback.manifest.task == "feedback"
    # the engine's module names are content-addressed; the router maps dimensions onto them
    assert [name.split("@")[0] for name in deployment.lora_modules] == [*deployment.dimensions, "feedback"]
    assert all(re.fullmatch(r"[a-z_]+@[0-9a-f]{12}", name) for name in deployment.lora_modules)
    assert deployment.module_names["realism"] in deployment.lora_modules


def test_module_name_changes_with_the_weights_and_not_with_the_manifest(deployment_copy):
    path, spec = deployment_copy
    before = load_deployment(path)
    adapter_dir = before.adapters["realism"].path
    manifest_path = adapter_dir / "manifest.yaml"
    manifest_path.write_text(manifest_path.read_text() + "\n")  # describing the adapter is not changing it
    assert load_deployment(path).module_names == before.module_names
    weights = adapter_dir / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    weights.write_bytes(bytes(data))
    after = load_deployment(path).module_names
    assert after["realism"] != before.module_names["realism"] and after["realism"].startswith("realism@")
    assert {d: m for d, m in after.items() if d != "realism"} == {
        d: m for d, m in before.module_names.items() if d != "realism"
    }


def test_feedback_adapter_is_named_apart_from_the_dimension_adapters(deployment_copy):
    path, spec = deployment_copy
    # listed among the dimension adapters: refused, it scores no dimension
    _rewrite(path, {**spec, "adapters": [*spec["adapters"], spec["feedback_adapter"]], "feedback_adapter": None})
    with pytest.raises(ConfigError, match="feedback adapter is listed under `adapters`"):
        load_deployment(path)
    # a score adapter named as the feedback adapter: refused
    _rewrite(path, {**spec, "feedback_adapter": spec["adapters"][0]})
    with pytest.raises(ConfigError, match="`feedback_adapter` needs task 'feedback'"):
        load_deployment(path)
    # a feedback adapter made for another rubric: refused (its prompt lists that rubric's titles)
    _rewrite(path, spec)
    _edit_manifest(path.parent / spec["feedback_adapter"], rubric="creativity5")
    with pytest.raises(ConfigError, match="rubric 'creativity5' differs"):
        load_deployment(path)
    # without one the deployment is valid and serves scores only
    _rewrite(path, {k: v for k, v in spec.items() if k != "feedback_adapter"})
    assert load_deployment(path).feedback is None


def test_missing_adapter_folder(deployment_copy):
    path, spec = deployment_copy
    spec["adapters"].append("adapters/does-not-exist")
    _rewrite(path, spec)
    with pytest.raises(ConfigError, match="does-not-exist.*does not exist"):
        load_deployment(path)


def test_base_hash_mismatch_against_the_base_on_disk(deployment_copy, tiny_profile):
    path, spec = deployment_copy
    spec["base"]["content_hash"] = "sha256:" + "0" * 64
    _rewrite(path, spec)
    with pytest.raises(ConfigError, match="content hash"):
        load_deployment(path, base_dir=tiny_profile.base.resolved_path)


def test_adapter_made_for_another_base(deployment_copy):
    path, spec = deployment_copy
    adapter_dir = path.parent / spec["adapters"][0]
    manifest = yaml.safe_load((adapter_dir / "manifest.yaml").read_text())
    manifest["base"]["content_hash"] = "sha256:" + "1" * 64
    (adapter_dir / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ConfigError, match=r"manifest.yaml: made for base"):
        load_deployment(path)


def test_rank_above_engine_maximum(deployment_copy):
    path, _ = deployment_copy
    with pytest.raises(ConfigError, match="rank 8 is above the engine's max_lora_rank 4"):
        load_deployment(path, max_lora_rank=4)


def test_two_adapters_for_one_dimension(deployment_copy):
    path, spec = deployment_copy
    _edit_manifest(
        path.parent / spec["adapters"][1],
        dimension=yaml.safe_load((path.parent / spec["adapters"][0] / "manifest.yaml").read_text())["dimension"],
    )
    with pytest.raises(ConfigError, match="two adapters for dimension"):
        load_deployment(path)


def test_dimension_not_in_rubric(deployment_copy):
    path, spec = deployment_copy
    _edit_manifest(path.parent / spec["adapters"][0], dimension="sparkle")
    with pytest.raises(ConfigError, match="'sparkle' is not in rubric"):
        load_deployment(path)


def test_invalid_manifest_field(deployment_copy):
    path, spec = deployment_copy
    _edit_manifest(path.parent / spec["adapters"][0], unexpected="x")
    with pytest.raises(ConfigError, match="manifest.yaml is invalid"):
        load_deployment(path)


def test_missing_peft_weights(deployment_copy):
    path, spec = deployment_copy
    (path.parent / spec["adapters"][0] / "adapter_model.safetensors").unlink()
    with pytest.raises(ConfigError, match="adapter_model.safetensors is missing"):
        load_deployment(path)

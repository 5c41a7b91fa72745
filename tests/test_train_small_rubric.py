"""Any rubric trains: a two-dimension rubric with descriptions, end to end on a handful of images."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

pytestmark = pytest.mark.slow  # `make test-unit` leaves it out; `make test` runs it

SMALL_RUBRIC = {
    "name": "small2",
    "title": "Two-part test rubric",
    "score_tokens": ["1", "2", "3", "4", "5"],
    "uses_description": True,
    "dimensions": [
        {"name": "colour", "description": "How many colours.", "levels": {i: f"level {i}" for i in range(1, 6)}},
        {"name": "lines", "description": "How many kinds of line.", "levels": {i: f"level {i}" for i in range(1, 6)}},
    ],
}


@pytest.fixture()
def small_data(tmp_path):
    from train.synth import write_dataset

    write_dataset(8, seed=77, out_dir=tmp_path / "src")
    rows = list(csv.DictReader((tmp_path / "src" / "labels.csv").open()))
    out = tmp_path / "labels.csv"
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "colour", "lines", "grade", "description"])
        for row in rows:
            writer.writerow([row["name"], row["color_richness"], row["line_texture"], row["grade"], row["description"]])
    rubric_path = tmp_path / "small2.yaml"
    rubric_path.write_text(yaml.safe_dump(SMALL_RUBRIC))
    return out, tmp_path / "src" / "images", rubric_path


def test_small_rubric_trains_and_resumes(tiny_profile, small_data, tmp_path):
    from adapters.manifest import load_deployment, load_manifest, read_base_ref, write_deployment
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset
    from train.trainer import TrainConfig, train_adapters

    csv_path, images, rubric_path = small_data
    rubric = load_rubric(rubric_path)
    dataset = load_dataset(csv_path, images, rubric)
    config = TrainConfig(
        learning_rate=5e-3,
        batch_size=4,
        epochs=1,
        val_fraction=0.25,
        version="test-1",
        dimension_overrides={"lines": {"epochs": 2, "learning_rate": 2e-3}},
    )
    base = tiny_profile.base.resolved_path
    out = tmp_path / "adapters"
    dirs = train_adapters(config, dataset, base, out)
    assert [d.name for d in dirs] == ["colour", "lines"]
    for d in dirs:
        assert (d / "adapter_model.safetensors").is_file()
        peft_config = json.loads((d / "adapter_config.json").read_text())
        assert peft_config["r"] == 8 and peft_config["base_model_name_or_path"] == tiny_profile.base.model_id
        manifest = load_manifest(d)
        assert manifest.rubric == "small2" and manifest.version == "test-1" and manifest.provenance.method == "raft"
        assert manifest.provenance.data_hash == dataset.content_hash()
        assert manifest.base == read_base_ref(base)
        assert manifest.metrics["history"][0]["epoch"] == 1
    # the override applies to its dimension only, and each manifest records the recipe its adapter was trained with
    colour, lines = (load_manifest(d) for d in dirs)
    assert len(colour.metrics["history"]) == 1 and colour.provenance.training_config["learning_rate"] == 5e-3
    assert len(lines.metrics["history"]) == 2 and lines.provenance.training_config["learning_rate"] == 2e-3
    assert "dimension_overrides" not in lines.provenance.training_config
    # resume: nothing is retrained (mtime unchanged)
    stamp = (dirs[0] / "adapter_model.safetensors").stat().st_mtime_ns
    train_adapters(config, dataset, base, out)
    assert (dirs[0] / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    # a deployment of the trained adapters validates against the base
    dep = write_deployment(
        tmp_path / "dep.yaml", name="small", rubric=str(rubric_path), base=read_base_ref(base), adapter_dirs=dirs
    )
    loaded = load_deployment(dep, base_dir=base, max_lora_rank=8)
    assert loaded.dimensions == ["colour", "lines"]


def test_dimension_overrides_resolve_and_are_checked(small_data):
    from adapters.errors import ConfigError
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset
    from train.trainer import TrainConfig, train_adapters

    plain = TrainConfig(learning_rate=3e-3, epochs=4)
    with_override = TrainConfig(learning_rate=3e-3, epochs=4, dimension_overrides={"lines": {"learning_rate": 1e-3}})
    # a dimension without an override trains (and hashes) exactly as the plain recipe
    assert (
        with_override.for_dimension("colour") == plain
        and with_override.for_dimension("colour").fingerprint() == plain.fingerprint()
    )
    lines = with_override.for_dimension("lines")
    assert (lines.learning_rate, lines.epochs, lines.dimension_overrides) == (1e-3, 4, {})
    assert with_override.fingerprint() != plain.fingerprint()
    csv_path, images, rubric_path = small_data
    dataset = load_dataset(csv_path, images, load_rubric(rubric_path))
    bad = TrainConfig(dimension_overrides={"colour": {"epochs": 2}, "linez": {"epochs": 2}})
    with pytest.raises(ConfigError, match="linez"):
        train_adapters(bad, dataset, None, None)
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(dimension_overrides={"lines": {"epochs": 0}})


def test_shared_adapter_ablation(tiny_profile, small_data, tmp_path):
    from adapters.manifest import load_manifest
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset
    from train.trainer import TrainConfig, train_adapters

    csv_path, images, rubric_path = small_data
    dataset = load_dataset(csv_path, images, load_rubric(rubric_path))
    config = TrainConfig(
        learning_rate=5e-3, batch_size=8, epochs=1, val_fraction=0.25, adapter_mode="shared", loss="cross_entropy"
    )
    dirs = train_adapters(config, dataset, tiny_profile.base.resolved_path, tmp_path / "shared")
    a, b = [(d / "adapter_model.safetensors").read_bytes() for d in dirs]
    assert a == b
    manifest = load_manifest(dirs[1])
    assert manifest.dimension == "lines" and manifest.provenance.method == "cross_entropy"
    assert "shared" in manifest.provenance.notes


def test_production_config_dry_run_on_meta():
    from adapters.rubric import load_rubric
    from train.config import dry_run, load_train_config

    config = load_train_config("production")
    assert config.dtype == "bfloat16" and config.gradient_checkpointing and config.effective_batch == 16
    report = dry_run(config, None, load_rubric())
    assert report["adapters"] == 9
    # rank-8 LoRA on q/k/v/o of Qwen2.5-VL-7B's 28 layers: 28 * 8 * ((3584+3584) + (3584+512) * 2 + (3584+3584))
    assert report["trainable_parameters_per_adapter"] == 28 * 8 * (2 * 3584 + 2 * (3584 + 512) + 2 * 3584)
    assert report["base_parameters"] > 8e9

"""`kidsart train --init-from`: the committed tiny adapters continued on a corrections file (two dimensions set by
two reviewers) with original rows replayed; the manifests record the lineage, the new set serves what the parent
served, and the weights start from the parent's (a near-zero learning rate leaves them where the parent had them,
which a fresh LoRA would not)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.numpy import load_file

from adapters.locations import PACKAGE_DIR
from adapters.manifest import load_deployment, load_manifest
from train.config import load_train_config
from train.synth import write_dataset

pytestmark = pytest.mark.slow

KIDSART = str(Path(sys.executable).with_name("kidsart"))
PARENT = PACKAGE_DIR / "deployments" / "tiny.yaml"
CORRECTED = ("realism", "color_richness")


def _corrections(source: Path, out: Path, rows: int) -> None:
    """The first `rows` artworks with only CORRECTED set (the rest blank, as a review export leaves them)."""
    with source.open(newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*table[0].keys(), "reviewers"])
        writer.writeheader()
        for i, row in enumerate(table[:rows]):
            kept = {
                k: (v if k in CORRECTED or k in ("name", "grade", "description", "comment") else "")
                for k, v in row.items()
            }
            writer.writerow({**kept, "reviewers": "ana" if i % 2 else "ana;ben"})


def test_continued_adapters_start_from_the_parent_and_record_where_they_came_from(tmp_path):
    data = write_dataset(20, 71, tmp_path / "synth").parent
    corrections = tmp_path / "corrections.csv"
    _corrections(data / "labels.csv", corrections, 8)
    config = load_train_config("tiny").model_copy(update={"epochs": 1, "learning_rate": 1e-9, "replay_ratio": 1.5})
    config_path = tmp_path / "continue.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    new_set = tmp_path / "continued.yaml"
    command = [
        KIDSART,
        "train",
        "--init-from",
        str(PARENT),
        "--data",
        str(corrections),
        "--images",
        str(data / "images"),
    ]
    command += ["--replay", str(data / "labels.csv"), "--replay-images", str(data / "images")]
    command += ["--config", str(config_path), "--out", str(tmp_path / "adapters"), "--deployment", str(new_set)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    parent = load_deployment(PARENT)
    child = load_deployment(new_set)
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == sorted(CORRECTED)
    for dim in child.dimensions:
        if dim not in CORRECTED:  # not corrected: the parent's adapter, served as it was
            assert child.adapters[dim].path == parent.adapters[dim].path
            continue
        manifest = load_manifest(child.adapters[dim].path)
        lineage = manifest.provenance.continued_from
        assert manifest.version.startswith("raft-1.c") and child.adapters[dim].module_name != parent.module_names[dim]
        assert lineage.parent == f"{dim}@raft-1" and lineage.parent_weights_hash == parent.adapters[dim].weights_hash
        assert lineage.corrected_rows == 8 and lineage.reviewers == 2  # ana and ben
        assert lineage.replay_rows == 12 and lineage.replay_ratio == 1.5  # round(1.5 * 8) of the 20 original rows
        assert lineage.corrections_hash.startswith("sha256:")
        new = load_file(str(child.adapters[dim].path / "adapter_model.safetensors"))
        old = load_file(str(parent.adapters[dim].path / "adapter_model.safetensors"))
        assert new.keys() == old.keys()
        # started from the parent: a fresh LoRA's B matrices are zero, the parent's are not
        assert max(float(abs(new[k] - old[k]).max()) for k in new) < 1e-4
        assert max(float(abs(old[k]).max()) for k in old if "lora_B" in k) > 1e-2
    assert child.feedback is not None and child.feedback.path == parent.feedback.path


def test_replay_without_its_images_is_refused(tmp_path):
    data = write_dataset(2, 72, tmp_path / "synth").parent
    command = [KIDSART, "train", "--init-from", str(PARENT), "--data", str(data / "labels.csv")]
    command += ["--images", str(data / "images"), "--replay", str(data / "labels.csv"), "--out", str(tmp_path / "a")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--replay and --replay-images go together" in done.stderr

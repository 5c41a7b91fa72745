"""Continue a deployment's adapters on teachers' corrections: `kidsart train --init-from DEPLOYMENT`.

Each served dimension's adapter is loaded as it is (its LoRA shape and weights) and trained
further with RAFT on the corrections (`kidsart review export --format training-csv`: a blank
cell is a dimension the teacher did not set) mixed with original rows replayed beside them
(`--replay`, `replay_ratio` replayed rows per corrected row, drawn with the config's seed), so
the adapters learn the new district without forgetting the old one. The new adapters get a
new version (`<parent version>.c<8 hex of the corrections hash>` unless one is given) and their
manifests record the parent, the corrections file's hash, its rows and its reviewers
(`adapters.manifest.ContinuedFrom`). A deployment set is written beside them with the parent
set's feedback adapter, so it serves what the parent served and can be promoted in place
(`kidsart adapters promote`).
"""

from __future__ import annotations

import csv
import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from adapters.errors import ConfigError, DatasetError
from adapters.manifest import ContinuedFrom, Deployment
from train.config import TrainConfig
from train.dataset import Dataset

log = logging.getLogger(__name__)

REVIEWERS_COLUMN = "reviewers"  # the review export's column: who set the row's levels, ';'-separated


def count_reviewers(csv_path: Path) -> int:
    """Distinct reviewers named in the corrections file's `reviewers` column (0 when it has none)."""
    with Path(csv_path).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    names = {name.strip() for row in rows for name in (row.get(REVIEWERS_COLUMN) or "").split(";") if name.strip()}
    return len(names)


def mixed_dataset(corrections: Dataset, replay: Dataset | None, ratio: float, seed: int, parent_hash: str) -> Dataset:
    """The corrections and `ratio` x as many replayed rows (all of them when there are fewer), names prefixed so
    the two files' names never collide; its content hash covers both, the draw and the parent adapters."""
    import numpy as np

    samples = [replace(s, name=f"corrections/{s.name}") for s in corrections.samples]
    replay_hash = ""
    if replay is not None and ratio > 0:
        wanted = min(len(replay), round(ratio * len(corrections)))
        picked = sorted(np.random.default_rng(seed).choice(len(replay), size=wanted, replace=False).tolist())
        samples += [replace(replay.samples[i], name=f"replay/{replay.samples[i].name}") for i in picked]
        replay_hash = replay.content_hash()
    digest = hashlib.sha256(
        f"{corrections.content_hash()}|{replay_hash}|{ratio}|{seed}|{len(samples)}|{parent_hash}".encode()
    )
    return Dataset(
        rubric=corrections.rubric,
        dimensions=corrections.dimensions,
        samples=samples,
        csv_path=corrections.csv_path,
        images_dir=corrections.images_dir,
        _hash="sha256:" + digest.hexdigest(),
    )


def continued_version(parent: Deployment, corrections_hash: str) -> str:
    """`<parent version>.c<8 hex>`: the parents' version (one, or refused) and which corrections made it."""
    versions = {a.manifest.version for a in parent.adapters.values()}
    if len(versions) != 1:
        raise ConfigError(
            f"deployment set {parent.source} mixes adapter versions {sorted(versions)}: name the new one with --version"
        )
    return f"{versions.pop()}.c{corrections_hash.removeprefix('sha256:')[:8]}"


def continue_adapters(
    config: TrainConfig,
    parent: Deployment,
    corrections: Dataset,
    replay: Dataset | None,
    base_dir: Path,
    out: Path,
    *,
    version: str | None,
    command: str,
    resume: bool = True,
) -> list[Path]:
    """Train every dimension the corrections label further from the parent's adapter; return the new folders."""
    from train.trainer import train_adapters

    if config.adapter_mode != "per_dimension":
        raise ConfigError("continued training keeps one adapter per dimension: use adapter_mode per_dimension")
    # only what a teacher set is continued; the other dimensions keep the parent's adapters
    labelled = [d for d in corrections.dimensions if any(d in s.scores for s in corrections.samples)]
    corrections = replace(corrections, dimensions=labelled)
    missing = [d for d in corrections.dimensions if d not in parent.adapters]
    if missing:
        raise ConfigError(f"deployment set {parent.source} has no adapter for {missing}, which the corrections label")
    if corrections.rubric.name != parent.rubric.name:
        raise ConfigError(f"the corrections are for rubric {corrections.rubric.name!r}, the set {parent.rubric.name!r}")
    if replay is not None and set(corrections.dimensions) - set(replay.dimensions):
        raise DatasetError(f"the replayed data labels {replay.dimensions}, the corrections {corrections.dimensions}")
    shapes = {(a.manifest.lora.rank, a.manifest.lora.alpha) for a in parent.adapters.values()}
    if len(shapes) != 1:
        raise ConfigError(f"deployment set {parent.source} mixes LoRA shapes {sorted(shapes)}")
    rank, alpha = shapes.pop()
    # the parent's LoRA shape is what is trained further; the manifests must say so
    config = config.model_copy(update={"rank": rank, "alpha": alpha, "prompt_format": parent.prompt_format.name})
    parent_hash = hashlib.sha256("|".join(a.weights_hash for a in parent.adapters.values()).encode()).hexdigest()
    dataset = mixed_dataset(corrections, replay, config.replay_ratio, config.seed, parent_hash)
    corrections_hash = corrections.content_hash()
    n_replay = len(dataset) - len(corrections)
    reviewers = count_reviewers(corrections.csv_path)
    lineage = {
        dim: ContinuedFrom(
            parent=parent.adapters[dim].manifest.label,
            parent_weights_hash=parent.adapters[dim].weights_hash,
            corrections_hash=corrections_hash,
            corrected_rows=len(corrections),
            reviewers=reviewers,
            replay_hash=replay.content_hash() if replay is not None and n_replay else None,
            replay_rows=n_replay,
            replay_ratio=config.replay_ratio,
        )
        for dim in corrections.dimensions
    }
    log.info(
        "continuing %d adapters of %s on %d corrected rows (%d reviewers) + %d replayed",
        len(lineage),
        parent.name,
        len(corrections),
        reviewers,
        n_replay,
    )
    return train_adapters(
        config,
        dataset,
        base_dir,
        out,
        command=command,
        resume=resume,
        init_from={dim: parent.adapters[dim].path for dim in corrections.dimensions},
        version=version or continued_version(parent, corrections_hash),
        continued_from=lineage,
        notes=f"Continued from deployment set {parent.name} on teachers' corrections.",
    )


def write_continued_deployment(path: Path, parent: Deployment, new_dirs: list[Path]) -> Path:
    """The new set: the continued adapters, the parent's adapters for dimensions the corrections did not label,
    and the parent's feedback adapter (it serves what the parent served)."""
    from adapters.manifest import write_deployment

    new = {Path(d).name: Path(d) for d in new_dirs}
    dirs = [new.get(dim, parent.adapters[dim].path) for dim in parent.dimensions]
    return write_deployment(
        path,
        name=path.stem,
        rubric=parent.rubric.name,
        base=parent.base,
        adapter_dirs=dirs,
        prompt_format=parent.prompt_format.name,
        feedback_dir=parent.feedback.path if parent.feedback is not None else None,
    )


def continue_from(
    config: TrainConfig,
    init_from: str,
    corrections: Dataset,
    profile,
    out: Path,
    replay_csv: str,
    replay_images: str,
    version: str,
    deployment: str,
    resume: bool,
) -> list[Path]:
    """`kidsart train --init-from`: load the parent set (validated against the profile's base) and the replayed
    data, continue the adapters, write the new deployment set when asked."""
    from adapters.manifest import load_deployment
    from train.dataset import load_dataset

    if bool(replay_csv) != bool(replay_images):
        raise ConfigError("--replay and --replay-images go together (the original labels CSV and its images)")
    base_dir = profile.base.resolved_path
    parent = load_deployment(
        Path(init_from),
        max_lora_rank=profile.engine.max_lora_rank,
        base_dir=base_dir if profile.base.source == "local" else None,
    )
    replay = load_dataset(replay_csv, replay_images, corrections.rubric, corrections.dimensions) if replay_csv else None
    dirs = continue_adapters(
        config,
        parent,
        corrections,
        replay,
        base_dir,
        out,
        version=version or None,
        command=f"kidsart train --init-from {init_from} --config {config.name}",
        resume=resume,
    )
    if deployment:
        write_continued_deployment(Path(deployment), parent, dirs)
        log.info("wrote deployment set %s", deployment)
    return dirs

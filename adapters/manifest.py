"""Adapter manifests and deployment sets.

Each adapter folder holds PEFT's `adapter_config.json` and weights plus a
`manifest.yaml` saying which rubric dimension it scores, which base it was made
for (id and content hash), its LoRA shape and how it was made. A deployment set
lists one base and its adapters. `load_deployment` validates the lot against the
rubric, the base on disk and the engine's limits, and names the file at fault.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from adapters.calibration import Calibration
from adapters.datafiles import StrictModel, parse_model, read_yaml
from adapters.errors import ConfigError
from adapters.feedback import FEEDBACK_MODULE, FEEDBACK_TASK
from adapters.hashing import folder_hash
from adapters.prompts import DEFAULT_PROMPT_FORMAT, PromptFormat, load_prompt_format
from adapters.rubric import Rubric, load_rubric

MANIFEST_NAME = "manifest.yaml"
MODULE_HASH_HEX = 12
BASE_MANIFEST_NAME = "base_manifest.yaml"


class BaseRef(StrictModel):
    """Identifies a base model exactly."""

    model_id: str = Field(description="Base model identifier (hub id or local profile id).")
    content_hash: str = Field(description="sha256 of the base checkpoint folder (adapters.hashing.folder_hash).")


class LoraShape(StrictModel):
    rank: int = Field(description="LoRA rank r.", ge=1)
    alpha: float = Field(description="LoRA alpha.")
    target_modules: str | list[str] = Field(description="PEFT target_modules (regex string or module names).")


class ImportSource(StrictModel):
    """Where an imported adapter came from, exactly."""

    layout: str = Field(description="Source layout, e.g. 'kidsartbench' (their save_pretrained folders).")
    folder: str = Field(description="The folder the adapter was read from.")
    checkpoint: str = Field(description="'best_model' (best validation step) or 'last_step'.")
    base_model_name_or_path: str | None = Field(default=None, description="The base its adapter_config.json named.")
    files: dict[str, str] = Field(description="sha256 of every file of the source folder.")


class ContinuedFrom(StrictModel):
    """What an adapter continued from (`kidsart train --init-from`): its parent and the teachers' corrections."""

    parent: str = Field(description="The parent adapter's name@version.")
    parent_weights_hash: str = Field(description="folder_hash of the parent's PEFT files.")
    corrections_hash: str = Field(description="sha256 of the corrections CSV and the images it names.")
    corrected_rows: int = Field(ge=0, description="Rows of the corrections file (artworks a teacher reviewed).")
    reviewers: int = Field(ge=0, description="Distinct reviewers named in its `reviewers` column (0: not named).")
    replay_hash: str | None = Field(default=None, description="Hash of the replayed original data, if any.")
    replay_rows: int = Field(default=0, ge=0, description="Original rows replayed beside the corrections.")
    replay_ratio: float = Field(default=0.0, ge=0, description="Replayed rows per corrected row (training config).")


class Provenance(StrictModel):
    method: str = Field(description="How the adapter was made: 'raft', 'cross_entropy', 'deterministic-init', ...")
    created_by: str = Field(description="Command that made it.")
    seed: int | None = Field(default=None, description="Seed used.")
    training_config: dict[str, Any] | None = Field(default=None, description="Full training config, if trained.")
    data_hash: str | None = Field(default=None, description="Hash of the training data, if trained.")
    notes: str | None = Field(default=None, description="Anything a reader should know.")
    source: ImportSource | None = Field(default=None, description="For imported adapters: the source files.")
    continued_from: ContinuedFrom | None = Field(
        default=None, description="For adapters trained further on corrections: the parent and the data."
    )


class AdapterManifest(StrictModel):
    """manifest.yaml inside one adapter folder."""

    name: str = Field(description="Adapter name; the served LoRA module is named after the dimension.")
    version: str = Field(description="Adapter version, reported as name@version in scores.")
    dimension: str = Field(
        description=f"Rubric dimension this adapter scores; '*' for one shared adapter; {FEEDBACK_MODULE!r} for a "
        "feedback adapter."
    )
    task: Literal["score", "feedback"] = Field(
        default="score",
        description="'score': answers one score token (RAIL); 'feedback': writes a comment from the image and the "
        "scores (adapters.feedback), trained by `kidsart train-feedback`.",
    )
    rubric: str = Field(
        description="Rubric name (a feedback adapter names the rubric whose titles and scores it reads)."
    )
    base: BaseRef
    lora: LoraShape
    provenance: Provenance
    metrics: dict[str, Any] = Field(default_factory=dict, description="Validation metrics, if any.")
    prompt_format: str = Field(
        default=DEFAULT_PROMPT_FORMAT,
        description="The prompt format (adapters/prompt_formats) this adapter was trained with and must be asked in.",
    )

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"


class DeploymentSet(StrictModel):
    """A deployment set YAML: one base and the adapters served on it."""

    name: str = Field(description="Deployment set name.")
    rubric: str = Field(description="Rubric name or path.")
    base: BaseRef
    prompt_format: str = Field(
        default=DEFAULT_PROMPT_FORMAT,
        description="Prompt format every adapter of the set is asked in (name in adapters/prompt_formats, or a path "
        "relative to this file); each adapter's manifest must name the same.",
    )
    adapters: list[str] = Field(
        description="Score adapter folders (one per dimension), relative to this file.", min_length=1
    )
    feedback_adapter: str | None = Field(
        default=None,
        description="Folder of the feedback adapter (task: feedback), relative to this file; none: the deployment "
        "scores only and a request for feedback is refused with 422.",
    )
    calibration: Calibration | None = Field(
        default=None,
        description="Intervals of stated coverage per dimension (written by `kidsart calibrate`); none: answers carry "
        "no interval.",
    )


class ResolvedAdapter(BaseModel):
    """An adapter after validation: where it is and what it says."""

    model_config = ConfigDict(frozen=True)

    dimension: str
    path: Path
    manifest: AdapterManifest
    weights_hash: str = Field(description="folder_hash of the PEFT files (config and weights; the manifest excluded).")

    @property
    def module_name(self) -> str:
        """The engine's LoRA module name: content-addressed, `<dimension>@<first 12 hex of the weights hash>`.

        vLLM keys its prefix cache (and its loaded-LoRA cache) by the LoRA's name alone, so an
        adapter changed under an unchanged name could be served KV blocks cached for the old
        weights; a name that changes with the weights cannot be.
        """
        return f"{self.dimension}@{self.weights_hash.removeprefix('sha256:')[:MODULE_HASH_HEX]}"


class Deployment(BaseModel):
    """A validated deployment: rubric, base and one adapter per served dimension."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    source: Path
    name: str
    rubric: Rubric
    base: BaseRef
    prompt_format: PromptFormat
    adapters: dict[str, ResolvedAdapter]
    feedback: ResolvedAdapter | None = None
    calibration: Calibration | None = Field(
        default=None, description="The set's calibration, for the dimensions whose calibrated adapter is served."
    )

    @property
    def adapter_labels(self) -> dict[str, str]:
        """Served dimension -> its adapter's name@version."""
        return {dim: self.adapters[dim].manifest.label for dim in self.dimensions}

    @property
    def dimensions(self) -> list[str]:
        return [d for d in self.rubric.dimension_names if d in self.adapters]

    @property
    def lora_modules(self) -> dict[str, ResolvedAdapter]:
        """Every LoRA module the engine serves, by its content-addressed module name: the dimensions, then feedback."""
        return {adapter.module_name: adapter for adapter in self._served()}

    @property
    def module_names(self) -> dict[str, str]:
        """Dimension (and FEEDBACK_MODULE for the feedback adapter) -> the engine's module name for it."""
        return {adapter.dimension: adapter.module_name for adapter in self._served()}

    def _served(self) -> list[ResolvedAdapter]:
        return [*(self.adapters[d] for d in self.dimensions), *([self.feedback] if self.feedback is not None else [])]


def load_manifest(adapter_dir: Path) -> AdapterManifest:
    path = adapter_dir / MANIFEST_NAME
    return parse_model(AdapterManifest, read_yaml(path, "adapter manifest"), "adapter manifest", path)


def write_manifest(adapter_dir: Path, manifest: AdapterManifest) -> Path:
    path = adapter_dir / MANIFEST_NAME
    path.write_text(yaml.safe_dump(manifest.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path


def read_base_ref(base_dir: Path) -> BaseRef:
    """The base's identity: model id from its base manifest, hash recomputed from its files."""
    if not base_dir.is_dir():
        raise ConfigError(f"base model folder {base_dir} does not exist (build it with `kidsart build-base`)")
    info = read_yaml(base_dir / BASE_MANIFEST_NAME, "base manifest") if (base_dir / BASE_MANIFEST_NAME).exists() else {}
    model_id = (info or {}).get("model_id", base_dir.name)
    return BaseRef(model_id=model_id, content_hash=folder_hash(base_dir))


def load_deployment(path: Path, *, max_lora_rank: int | None = None, base_dir: Path | None = None) -> Deployment:
    """Load a deployment set and validate every adapter in it.

    Errors (all ConfigError, naming the file): a missing adapter folder or PEFT
    file, an invalid manifest, a manifest whose base differs from the set's, a
    base on disk whose content hash differs, a rank above `max_lora_rank`, a
    dimension not in the rubric, two adapters for one dimension, a rubric mismatch.
    """
    path = Path(path).resolve()
    spec = parse_model(DeploymentSet, read_yaml(path, "deployment set"), "deployment set", path)
    rubric_ref = spec.rubric
    rubric = load_rubric(rubric_ref if not rubric_ref.endswith((".yaml", ".yml")) else path.parent / rubric_ref)
    format_ref = spec.prompt_format
    prompt_format = load_prompt_format(
        format_ref if not format_ref.endswith((".yaml", ".yml")) else path.parent / format_ref
    )

    if base_dir is not None:
        _check_base_on_disk(path, spec, base_dir)

    def resolve(entry: str) -> ResolvedAdapter:
        return _resolve_adapter(path, entry, spec, rubric, prompt_format, max_lora_rank)

    resolved = _score_adapters(path, [resolve(entry) for entry in spec.adapters], rubric)
    feedback = None
    if spec.feedback_adapter is not None:
        feedback = resolve(spec.feedback_adapter)
        if feedback.manifest.task != FEEDBACK_TASK or feedback.dimension != FEEDBACK_MODULE:
            raise ConfigError(
                f"adapter manifest {feedback.path / MANIFEST_NAME}: `feedback_adapter` needs task {FEEDBACK_TASK!r} "
                "and "
                f"dimension {FEEDBACK_MODULE!r}, found task {feedback.manifest.task!r}, dimension "
                f"{feedback.dimension!r}"
            )
    return Deployment(
        source=path,
        name=spec.name,
        rubric=rubric,
        base=spec.base,
        prompt_format=prompt_format,
        adapters=resolved,
        feedback=feedback,
        calibration=spec.calibration.applying_to({dim: adapter.manifest.label for dim, adapter in resolved.items()})
        if spec.calibration
        else None,
    )


def _check_base_on_disk(path: Path, spec: DeploymentSet, base_dir: Path) -> None:
    on_disk = read_base_ref(base_dir)
    if on_disk.content_hash != spec.base.content_hash:
        raise ConfigError(
            f"deployment set {path}: base {spec.base.model_id} expects content hash {spec.base.content_hash}, "
            f"but {base_dir} has {on_disk.content_hash} (rebuild the base or retrain the adapters)"
        )


def _score_adapters(path: Path, adapters: list[ResolvedAdapter], rubric: Rubric) -> dict[str, ResolvedAdapter]:
    """The set's scoring adapters by dimension: each a `score` adapter of a rubric dimension, one per dimension."""
    resolved: dict[str, ResolvedAdapter] = {}
    for adapter in adapters:
        where = f"adapter manifest {adapter.path / MANIFEST_NAME}"
        if adapter.manifest.task != "score":
            raise ConfigError(
                f"{where}: a {adapter.manifest.task} adapter is listed under `adapters`; name it as `feedback_adapter`"
            )
        if adapter.dimension not in rubric.dimension_names:
            raise ConfigError(
                f"{where}: dimension {adapter.dimension!r} is not in rubric {rubric.name!r} {rubric.dimension_names}"
            )
        if adapter.dimension in resolved:
            raise ConfigError(
                f"deployment set {path}: two adapters for dimension {adapter.dimension!r}: "
                f"{resolved[adapter.dimension].path} and {adapter.path}"
            )
        resolved[adapter.dimension] = adapter
    return resolved


def _resolve_adapter(
    path: Path, entry: str, spec: DeploymentSet, rubric: Rubric, prompt_format: PromptFormat, max_lora_rank: int | None
) -> ResolvedAdapter:
    """One adapter folder of a deployment set, checked against the set (files, rubric, format, base, rank)."""
    adapter_dir = (path.parent / entry).resolve()
    if not adapter_dir.is_dir():
        raise ConfigError(f"deployment set {path}: adapter folder {adapter_dir} does not exist")
    for required in ("adapter_config.json", "adapter_model.safetensors"):
        if not (adapter_dir / required).is_file():
            raise ConfigError(f"adapter {adapter_dir}: {required} is missing")
    manifest = load_manifest(adapter_dir)
    where = f"adapter manifest {adapter_dir / MANIFEST_NAME}"
    if manifest.rubric != rubric.name:
        raise ConfigError(f"{where}: rubric {manifest.rubric!r} differs from the deployment's {rubric.name!r}")
    if manifest.prompt_format != prompt_format.name:
        raise ConfigError(
            f"{where}: the adapter is asked in prompt format {manifest.prompt_format!r}, "
            f"but the deployment set uses {prompt_format.name!r}"
        )
    if manifest.base != spec.base:
        raise ConfigError(
            f"{where}: made for base {manifest.base.model_id} {manifest.base.content_hash}, "
            f"but the deployment's base is {spec.base.model_id} {spec.base.content_hash}"
        )
    peft_config = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    rank = int(peft_config.get("r", manifest.lora.rank))
    if rank != manifest.lora.rank:
        raise ConfigError(f"{where}: lora.rank {manifest.lora.rank} differs from adapter_config.json r={rank}")
    if max_lora_rank is not None and rank > max_lora_rank:
        raise ConfigError(f"{where}: LoRA rank {rank} is above the engine's max_lora_rank {max_lora_rank}")
    return ResolvedAdapter(
        dimension=manifest.dimension, path=adapter_dir, manifest=manifest, weights_hash=folder_hash(adapter_dir)
    )


def load_profile_deployment(profile) -> Deployment:
    """Validate a profile's deployment set against its base on disk and engine limits."""
    base_dir = profile.base.resolved_path
    deployment = load_deployment(
        profile.deployment_path,
        max_lora_rank=profile.engine.max_lora_rank,
        base_dir=base_dir if profile.base.source == "local" else None,
    )
    deployment.prompt_format.check_image_size(profile.image_size, f"deployment set {deployment.source}")
    return deployment


def write_deployment(
    path: Path,
    *,
    name: str,
    rubric: str,
    base: BaseRef,
    adapter_dirs: list[Path],
    prompt_format: str = DEFAULT_PROMPT_FORMAT,
    feedback_dir: Path | None = None,
) -> Path:
    """Write a deployment-set YAML listing `adapter_dirs` relative to it."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    spec = DeploymentSet(
        name=name,
        rubric=rubric,
        base=base,
        prompt_format=prompt_format,
        adapters=[os.path.relpath(Path(d).resolve(), path.parent.resolve()) for d in adapter_dirs],
        feedback_adapter=os.path.relpath(Path(feedback_dir).resolve(), path.parent.resolve()) if feedback_dir else None,
    )
    path.write_text(yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False), encoding="utf-8")
    return path

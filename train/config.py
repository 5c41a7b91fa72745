"""Training configs: one strict schema (`TrainConfig`), per-dimension overrides, loaded from
`train/configs/NAME.yaml` (shipped in the package) or a path; `dry_run` sizes a config on the
meta device (`kidsart train --dry-run`) without reading weights or data."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adapters.datafiles import load_data_file
from adapters.errors import ConfigError
from adapters.limits import DEFAULT_IMAGE_SIZE, ImageSize

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class DimensionOverride(BaseModel):
    """Settings one dimension trains with instead of the recipe's (a weak signal needs a gentler, longer run)."""

    model_config = ConfigDict(extra="forbid")

    learning_rate: float | None = Field(default=None, gt=0, description="AdamW peak learning rate for this dimension.")
    epochs: int | None = Field(default=None, ge=1, description="Passes over the training split for this dimension.")


class TrainConfig(BaseModel):
    """A training recipe. Defaults are the KidsArtBench paper's (rank 8, alpha 16, q/k/v/o, batch 16, 224 px)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="paper", description="Name of this recipe (recorded in manifests).")
    version: str = Field(default="raft-1", description="Adapter version written to manifests (name@version in scores).")
    seed: int = Field(default=0, description="Seed for LoRA init, shuffling and the train/validation split.")
    rank: int = Field(default=8, ge=1, description="LoRA rank r.")
    alpha: float = Field(default=16, description="LoRA alpha.")
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: str | list[str] = Field(
        default=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)",
        description="PEFT target modules: the language model's q/k/v/o projections.",
    )
    learning_rate: float = Field(
        default=2e-5, gt=0, description="AdamW peak learning rate (paper: 1e-5 to 2e-5 on 7B)."
    )
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine", description="Learning-rate schedule over all steps."
    )
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="Share of steps with linear warm-up.")
    batch_size: int = Field(default=16, ge=1, description="Micro-batch size.")
    grad_accum_steps: int = Field(
        default=1,
        ge=1,
        description="Micro-batches per optimiser step (effective batch = batch_size * grad_accum_steps).",
    )
    epochs: int = Field(default=3, ge=1, description="Passes over the training split.")
    max_grad_norm: float | None = Field(default=1.0, description="Gradient clipping norm (None: off).")
    image_size: ImageSize = Field(
        default=DEFAULT_IMAGE_SIZE, description="Side of the square input image (as the profile's)."
    )
    prompt_format: str = Field(
        default="kidsart",
        description="Prompt format the adapters are trained in (adapters/prompt_formats; its image recipe too); "
        "recorded in each manifest, and a deployment set must name the same.",
    )
    val_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="Share of artworks held out for the per-epoch validation metric."
    )
    loss: Literal["raft", "cross_entropy"] = Field(
        default="raft", description="raft: MSE on the expected score; cross_entropy: CE on the label's score token."
    )
    ce_weight: float = Field(
        default=0.0, ge=0, description="Weight of an extra cross-entropy term added to the RAFT loss."
    )
    name_weight: float = Field(
        default=1.0,
        ge=1.0,
        le=100.0,
        description="Feedback SFT only: loss weight of the comment tokens that name its strength and weakness "
        "(the words that must agree with the scores in the prompt); 1 is plain cross-entropy.",
    )
    adapter_mode: Literal["per_dimension", "shared"] = Field(
        default="per_dimension",
        description="per_dimension: one LoRA per dimension; shared: one LoRA for all (ablation).",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        default="float32", description="Training dtype (bf16 on GPU)."
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Training device.")
    gradient_checkpointing: bool = Field(
        default=False, description="Recompute activations in the backward pass (large bases)."
    )
    num_threads: int | None = Field(default=2, description="torch CPU threads (None: torch default).")
    eval_batch_size: int = Field(default=32, ge=1, description="Batch size of the validation pass.")
    meta_base_config: dict[str, Any] | None = Field(
        default=None,
        description="Qwen2_5_VLConfig keyword arguments for the meta-device dry run when the checkpoint is not on "
        "disk.",
    )
    replay_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=20.0,
        description="Continued training (`kidsart train --init-from --replay`): original rows replayed per "
        "corrected row, drawn at random with the seed (keeps what the adapters knew while they learn the "
        "corrections); 0: corrections only.",
    )
    dimension_overrides: dict[str, DimensionOverride] = Field(
        default_factory=dict,
        description="Per-dimension learning rate / epochs (per_dimension mode only); every other setting is shared.",
    )

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum_steps

    def for_dimension(self, name: str) -> TrainConfig:
        """The recipe one dimension's adapter is trained with: its override applied, no overrides left."""
        override = self.dimension_overrides.get(name)
        changes = {k: v for k, v in (override.model_dump().items() if override else ()) if v is not None}
        return self.model_copy(update={**changes, "dimension_overrides": {}})

    def fingerprint(self) -> str:
        """Hash of the settings. An empty override table and a default name_weight or replay_ratio are left out, so
        a recipe hashes the same as one written before those settings existed (adapters trained then still match)."""
        left_out = (
            ({"dimension_overrides"} if not self.dimension_overrides else set())
            | ({"name_weight"} if self.name_weight == 1.0 else set())
            | ({"replay_ratio"} if self.replay_ratio == 1.0 else set())
        )
        settings = self.model_dump(mode="json", exclude=left_out or None)
        return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def load_train_config(name_or_path: str | Path = "tiny") -> TrainConfig:
    """Load a training config by name (train/configs/NAME.yaml) or path."""
    return load_data_file(TrainConfig, "training config", name_or_path, CONFIG_DIR)


# ---------------------------------------------------------------- loss


def dry_run(config: TrainConfig, base_dir: Path | None, rubric) -> dict:
    """Build the model on the meta device from its config and report trainable parameters per adapter.

    Uses `base_dir/config.json` when present, else `config.meta_base_config`. No weights are read.
    """
    import torch
    from peft import get_peft_model
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from train.init_adapters import lora_config

    if base_dir is not None and (Path(base_dir) / "config.json").is_file():
        model_config = Qwen2_5_VLConfig.from_pretrained(base_dir)
        source = str(Path(base_dir) / "config.json")
    elif config.meta_base_config:
        model_config = Qwen2_5_VLConfig(**config.meta_base_config)
        source = "training config meta_base_config"
    else:
        raise ConfigError("dry run needs the base's config.json or meta_base_config in the training config")
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(model_config)
    total = sum(p.numel() for p in model.parameters())
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    peft_model = get_peft_model(model, lora_config(config.rank, config.alpha, config.target_modules, config.dropout))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n_adapters = 1 if config.adapter_mode == "shared" else len(rubric.dimensions)
    return {
        "config_source": source,
        "dtype": config.dtype,
        "gradient_checkpointing": config.gradient_checkpointing,
        "base_parameters": total,
        "trainable_parameters_per_adapter": trainable,
        "trainable_share": trainable / total,
        "adapters": n_adapters,
        "adapter_bytes_per_adapter": trainable * (2 if config.dtype != "float32" else 4),
        "effective_batch": config.effective_batch,
    }

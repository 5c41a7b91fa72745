"""RAFT training of one PEFT LoRA per rubric dimension (or one shared LoRA).

The loss is RAFT: MSE between the label and the expected score sum_k k * p(k)
over the rubric's score tokens, computed by `adapters.rail.expected_score` (the
function the server uses for RAIL), optionally plus a cross-entropy term over the
score tokens; `loss: cross_entropy` trains with cross-entropy alone (the paper's
ablation). Inputs are built exactly as serving builds them: the rubric's chat
messages through the base's chat template and processor
(`adapters.hf_scoring.ScoringProcessor`), images letter-boxed by
`adapters.images.normalize_image`. Encoded prompts and the frozen vision tower's
output per image are cached once per run (`train.encoded`).

Each finished adapter is written atomically to OUT/<dimension> with its
manifest (training config, data hash, base hash, validation metrics per epoch).
A rerun skips dimensions whose manifest matches the same config, data and base,
so an interrupted run resumes per dimension.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from adapters.errors import ConfigError
from train.encoded import EncodedData

log = logging.getLogger(__name__)

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
    learning_rate: float = Field(default=2e-5, gt=0, description="AdamW peak learning rate (paper: 1e-5 to 2e-5 on 7B).")
    weight_decay: float = Field(default=0.0, ge=0, description="AdamW weight decay.")
    lr_schedule: Literal["constant", "cosine"] = Field(default="cosine", description="Learning-rate schedule over all steps.")
    warmup_fraction: float = Field(default=0.05, ge=0, lt=1, description="Share of steps with linear warm-up.")
    batch_size: int = Field(default=16, ge=1, description="Micro-batch size.")
    grad_accum_steps: int = Field(default=1, ge=1, description="Micro-batches per optimiser step (effective batch = batch_size * grad_accum_steps).")
    epochs: int = Field(default=3, ge=1, description="Passes over the training split.")
    max_grad_norm: float | None = Field(default=1.0, description="Gradient clipping norm (None: off).")
    image_size: int = Field(default=224, description="Side of the square input image.")
    prompt_format: str = Field(
        default="kidsart",
        description="Prompt format the adapters are trained in (adapters/prompt_formats; its image recipe too); "
        "recorded in each manifest, and a deployment set must name the same.",
    )
    val_fraction: float = Field(default=0.1, ge=0, lt=1, description="Share of artworks held out for the per-epoch validation metric.")
    loss: Literal["raft", "cross_entropy"] = Field(default="raft", description="raft: MSE on the expected score; cross_entropy: CE on the label's score token.")
    ce_weight: float = Field(default=0.0, ge=0, description="Weight of an extra cross-entropy term added to the RAFT loss.")
    name_weight: float = Field(
        default=1.0, ge=1.0, le=100.0,
        description="Feedback SFT only: loss weight of the comment tokens that name its strength and weakness "
        "(the words that must agree with the scores in the prompt); 1 is plain cross-entropy.",
    )
    adapter_mode: Literal["per_dimension", "shared"] = Field(
        default="per_dimension", description="per_dimension: one LoRA per dimension; shared: one LoRA for all (ablation)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="float32", description="Training dtype (bf16 on GPU).")
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Training device.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute activations in the backward pass (large bases).")
    num_threads: int | None = Field(default=2, description="torch CPU threads (None: torch default).")
    eval_batch_size: int = Field(default=32, ge=1, description="Batch size of the validation pass.")
    meta_base_config: dict[str, Any] | None = Field(
        default=None,
        description="Qwen2_5_VLConfig keyword arguments for the meta-device dry run when the checkpoint is not on disk.",
    )
    dimension_overrides: dict[str, DimensionOverride] = Field(
        default_factory=dict,
        description="Per-dimension learning rate / epochs (per_dimension mode only); every other setting is shared.",
    )

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum_steps

    def for_dimension(self, name: str) -> "TrainConfig":
        """The recipe one dimension's adapter is trained with: its override applied, no overrides left."""
        override = self.dimension_overrides.get(name)
        changes = {k: v for k, v in (override.model_dump().items() if override else ()) if v is not None}
        return self.model_copy(update={**changes, "dimension_overrides": {}})

    def fingerprint(self) -> str:
        """Hash of the settings. An empty override table and a default name_weight are left out, so a recipe
        hashes the same as one written before those settings existed (adapters trained then still match)."""
        left_out = ({"dimension_overrides"} if not self.dimension_overrides else set()) | ({"name_weight"} if self.name_weight == 1.0 else set())
        settings = self.model_dump(mode="json", exclude=left_out or None)
        return "sha256:" + hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def load_train_config(name_or_path: str | Path = "tiny") -> TrainConfig:
    """Load a training config by name (train/configs/NAME.yaml) or path."""
    path = Path(name_or_path)
    if path.suffix not in {".yaml", ".yml"}:
        path = CONFIG_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ConfigError(f"training config {path} does not exist (shipped: {sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))})")
    try:
        return TrainConfig.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except yaml.YAMLError as exc:
        raise ConfigError(f"training config {path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        raise ConfigError(f"training config {path} is invalid: {exc}") from exc


# ---------------------------------------------------------------- loss

def raft_loss(score_logits, labels, levels, *, loss: str = "raft", ce_weight: float = 0.0):
    """(loss, expected scores). RAFT = MSE(label, expected_score(logits)) via adapters.rail.expected_score."""
    import torch.nn.functional as F

    from adapters.rail import expected_score

    _, mean, _ = expected_score(score_logits, levels)
    target = labels.to(mean.dtype)
    if loss == "cross_entropy":
        value = F.cross_entropy(score_logits, (labels - levels[0]).long())
    else:
        value = F.mse_loss(mean, target)
        if ce_weight > 0:
            value = value + ce_weight * F.cross_entropy(score_logits, (labels - levels[0]).long())
    return value, mean


# ---------------------------------------------------------------- training

def _set_threads(config: TrainConfig) -> None:
    import torch

    if config.num_threads:
        torch.set_num_threads(config.num_threads)


def _to_device(batch: dict, device: str) -> dict:
    """Move a collated batch to `device` (tensors, and the cached vision features inside mm_encoder_outputs)."""
    if device == "cpu":
        return batch
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    out = {k: v.to(device) for k, v in batch.items() if k != "mm_encoder_outputs"}
    features = batch["mm_encoder_outputs"]["image"].pooler_output
    out["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=tuple(f.to(device) for f in features))}
    return out


def _predict(model, encoded, items, score_token_ids, levels, batch_size, device: str = "cpu"):
    import torch

    from adapters.hf_scoring import score_token_logits
    from adapters.rail import expected_score

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            logits = score_token_logits(model, _to_device(encoded.collate(items[start : start + batch_size]), device), score_token_ids)
            out.extend(expected_score(logits.double(), levels)[1].tolist())
    model.train()
    return out


def _lr_factor(step: int, total: int, config: TrainConfig) -> float:
    warm = int(config.warmup_fraction * total)
    if step < warm:
        return (step + 1) / warm
    if config.lr_schedule == "constant":
        return 1.0
    progress = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_step(optimizer, params, step: int, total: int, config: TrainConfig) -> None:
    """One AdamW step at the schedule's learning rate, gradients clipped to `max_grad_norm`, then cleared."""
    import torch

    for group in optimizer.param_groups:
        group["lr"] = config.learning_rate * _lr_factor(step, total, config)
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _load_base(base_dir: Path, config: TrainConfig):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=getattr(torch, config.dtype)).eval()


def _fit(config, base_dir, scoring, encoded, train_items, val_items, levels, seed: int, label_of, desc: str):
    """Train one LoRA on (sample index, Dimension) items; return (peft model, per-epoch validation metrics)."""
    import numpy as np
    import torch
    from peft import get_peft_model
    from tqdm import tqdm
    from adapters.hf_scoring import score_token_logits
    from train.evaluate import mae, spearman
    from train.init_adapters import lora_config

    torch.manual_seed(seed)
    model = _load_base(base_dir, config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model = get_peft_model(model, lora_config(config.rank, config.alpha, config.target_modules, config.dropout))
    model.to(config.device)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(seed)
    steps_per_epoch = math.ceil(len(train_items) / config.effective_batch)
    total = steps_per_epoch * config.epochs
    level_t = list(levels)
    history = []
    step = 0
    for epoch in range(config.epochs):
        order = rng.permutation(len(train_items))
        running = []
        bar = tqdm(range(0, len(order), config.batch_size), desc=f"{desc} epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for micro, start in enumerate(bar):
            items = [train_items[i] for i in order[start : start + config.batch_size]]
            inputs = _to_device(encoded.collate(items), config.device)
            labels = torch.tensor([label_of(item) for item in items], dtype=torch.float32, device=config.device)
            logits = score_token_logits(model, inputs, scoring.score_token_ids).float()
            loss, _ = raft_loss(logits, labels, level_t, loss=config.loss, ce_weight=config.ce_weight)
            (loss / config.grad_accum_steps).backward()
            running.append(float(loss.detach()))
            last = start + config.batch_size >= len(order)
            if (micro + 1) % config.grad_accum_steps == 0 or last:
                optimizer_step(optimizer, params, step, total, config)
                step += 1
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        record = {"epoch": epoch + 1, "train_loss": round(float(np.mean(running)), 5)}
        if val_items:
            pred = _predict(model, encoded, val_items, scoring.score_token_ids, level_t, config.eval_batch_size, config.device)
            true = [label_of(item) for item in val_items]
            record.update({"val_srcc": _round(spearman(pred, true)), "val_mae": _round(mae(pred, true)), "val_n": len(val_items)})
        history.append(record)
        log.info("%s epoch %d: %s", desc, epoch + 1, record)
    return model, history


def _round(x: float):
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 5)


def _manifest_matches(adapter_dir: Path, fingerprint: dict) -> bool:
    from adapters.manifest import load_manifest

    if not (adapter_dir / "manifest.yaml").is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        return False
    try:
        manifest = load_manifest(adapter_dir)
    except ConfigError:
        return False
    prov = manifest.provenance
    return (
        prov.data_hash == fingerprint["data_hash"]
        and manifest.base.content_hash == fingerprint["base_hash"]
        and (prov.training_config or {}).get("fingerprint") == fingerprint["config"]
    )


def _save(model, target: Path, manifest) -> None:
    from adapters.manifest import write_manifest
    from train.init_adapters import tidy_peft_folder

    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tidy_peft_folder(tmp, manifest.base.model_id)
    write_manifest(tmp, manifest)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


NOTES = (
    "Trained with RAFT on procedurally drawn synthetic images whose labels are set by drawing parameters "
    "(train/synth.py). Scores reflect those synthetic rules on the small pre-trained test base (README: The test base), not art judgement."
)


def train_adapters(
    config: TrainConfig,
    dataset,
    base_dir: Path,
    out_dir: Path,
    *,
    command: str = "kidsart train",
    resume: bool = True,
    notes: str = NOTES,
) -> list[Path]:
    """Train adapters for every dimension of `dataset` into out_dir/<dimension>; return their folders."""
    import torch

    from adapters.hf_scoring import ScoringProcessor
    from adapters.manifest import AdapterManifest, LoraShape, Provenance, read_base_ref
    from adapters.prompts import load_prompt_format

    rubric = dataset.rubric
    unknown = sorted(set(config.dimension_overrides) - set(rubric.dimension_names))
    if unknown:
        raise ConfigError(f"training config {config.name}: dimension_overrides names {', '.join(unknown)}, "
                          f"not dimensions of rubric {rubric.name} ({', '.join(rubric.dimension_names)})")
    if config.adapter_mode == "shared" and config.dimension_overrides:
        log.info("one shared LoRA: the per-dimension overrides (%s) do not apply", ", ".join(sorted(config.dimension_overrides)))
        config = config.model_copy(update={"dimension_overrides": {}})
    _set_threads(config)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base_ref = read_base_ref(base_dir)
    dims = [rubric.dimension(d) for d in dataset.dimensions]
    # Each dimension's adapter is trained, fingerprinted and recorded with its own resolved recipe.
    recipes = {d.name: config.for_dimension(d.name) for d in dims}
    fingerprints = {
        name: {"data_hash": dataset.content_hash(), "base_hash": base_ref.content_hash, "config": recipe.fingerprint()}
        for name, recipe in recipes.items()
    }
    targets = {d.name: out_dir / d.name for d in dims}
    todo = [d for d in dims if not (resume and _manifest_matches(targets[d.name], fingerprints[d.name]))]
    for d in dims:
        if d not in todo:
            log.info("resume: %s is already trained with this config, data and base; skipping", d.name)
    if not todo:
        return [targets[d.name] for d in dims]

    train_samples, val_samples = dataset.split(config.val_fraction, config.seed)
    index = {s.name: i for i, s in enumerate(dataset.samples)}
    prompt_format = load_prompt_format(config.prompt_format)
    scoring = ScoringProcessor.load(base_dir, rubric, config.image_size, prompt_format)
    encoded = EncodedData(scoring, rubric, dataset.samples, config.image_size, _load_base(base_dir, config))
    train_idx = [index[s.name] for s in train_samples]
    val_idx = [index[s.name] for s in val_samples]
    label_of = lambda item: dataset.samples[item[0]].scores[item[1].name]  # noqa: E731
    def training_config(dim_name: str) -> dict:
        recipe = recipes[dim_name]
        return {
            **recipe.model_dump(mode="json", exclude={"dimension_overrides"}),
            "fingerprint": recipe.fingerprint(),
            "rubric": rubric.name,
            "dimensions": [d.name for d in dims],
            "n_train": len(train_idx),
            "n_val": len(val_idx),
            "data": str(dataset.csv_path),
        }

    def manifest_for(dim_name: str, history: list, seconds: float, shared: bool) -> AdapterManifest:
        final = history[-1] if history else {}
        return AdapterManifest(
            name=dim_name,
            version=config.version,
            dimension=dim_name,
            rubric=rubric.name,
            base=base_ref,
            lora=LoraShape(rank=config.rank, alpha=config.alpha, target_modules=config.target_modules),
            provenance=Provenance(
                method=("raft" if config.loss == "raft" else "cross_entropy") + ("+ce" if config.loss == "raft" and config.ce_weight > 0 else ""),
                created_by=command,
                seed=config.seed,
                training_config=training_config(dim_name),
                data_hash=fingerprints[dim_name]["data_hash"],
                notes=notes + (" One LoRA shared by all dimensions (ablation)." if shared else ""),
            ),
            prompt_format=prompt_format.name,
            metrics={
                "val_srcc": final.get("val_srcc"),
                "val_mae": final.get("val_mae"),
                "val_n": final.get("val_n"),
                "train_seconds": round(seconds, 1),
                "history": history,
            },
        )

    written = []
    if config.adapter_mode == "shared":
        start = time.perf_counter()
        train_items = [(i, d) for i in train_idx for d in dims]
        val_items = [(i, d) for i in val_idx for d in dims]
        model, history = _fit(config, base_dir, scoring, encoded, train_items, val_items, rubric.levels, config.seed, label_of, "shared")
        seconds = time.perf_counter() - start
        for d in dims:
            dim_hist = history
            if val_idx:
                from train.evaluate import mae, spearman

                items = [(i, d) for i in val_idx]
                pred = _predict(model, encoded, items, scoring.score_token_ids, rubric.levels, config.eval_batch_size, config.device)
                true = [label_of(it) for it in items]
                dim_hist = [*history[:-1], {**history[-1], "val_srcc": _round(spearman(pred, true)), "val_mae": _round(mae(pred, true)), "val_n": len(items)}]
            _save(model, targets[d.name], manifest_for(d.name, dim_hist, seconds, True))
            written.append(targets[d.name])
        return [targets[d.name] for d in dims]

    for position, d in enumerate(dims):
        if d not in todo:
            continue
        start = time.perf_counter()
        seed = config.seed * 1000 + rubric.dimension_names.index(d.name)
        model, history = _fit(
            recipes[d.name], base_dir, scoring, encoded, [(i, d) for i in train_idx], [(i, d) for i in val_idx],
            rubric.levels, seed, label_of, d.name,
        )
        seconds = time.perf_counter() - start
        _save(model, targets[d.name], manifest_for(d.name, history, seconds, False))
        log.info("trained %s in %.1f s (%d/%d): %s", d.name, seconds, position + 1, len(dims), history[-1])
        written.append(targets[d.name])
        del model
        torch.manual_seed(0)
    return [targets[d.name] for d in dims]


# ---------------------------------------------------------------- dry run

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

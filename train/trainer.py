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

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

from adapters.errors import ConfigError, DatasetError
from train.config import TrainConfig
from train.encoded import EncodedData
from train.run_record import NOTES, RunRecord

log = logging.getLogger(__name__)


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
    out["mm_encoder_outputs"] = {
        "image": BaseModelOutputWithPooling(pooler_output=tuple(f.to(device) for f in features))
    }
    return out


def _predict(model, encoded, items, score_token_ids, levels, batch_size, device: str = "cpu"):
    import torch

    from adapters.hf_scoring import score_token_logits
    from adapters.rail import expected_score

    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            logits = score_token_logits(
                model, _to_device(encoded.collate(items[start : start + batch_size]), device), score_token_ids
            )
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


def _fit(config, base_dir, scoring, encoded, train_items, val_items, levels, seed: int, label_of, desc: str, init=None):
    """Train one LoRA on (sample index, Dimension) items; return (peft model, per-epoch validation metrics).
    `init`: an adapter folder to continue from (its LoRA shape and weights) instead of a fresh LoRA."""
    import numpy as np
    import torch
    from peft import PeftModel, get_peft_model
    from tqdm import tqdm

    from adapters.hf_scoring import score_token_logits
    from train.init_adapters import lora_config
    from train.metrics import mae, spearman

    torch.manual_seed(seed)
    model = _load_base(base_dir, config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if init is not None:
        model = PeftModel.from_pretrained(model, str(init), is_trainable=True)
    else:
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
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
        )
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
            pred = _predict(
                model, encoded, val_items, scoring.score_token_ids, level_t, config.eval_batch_size, config.device
            )
            true = [label_of(item) for item in val_items]
            record.update(
                {"val_srcc": _round(spearman(pred, true)), "val_mae": _round(mae(pred, true)), "val_n": len(val_items)}
            )
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


def _checked_config(config: TrainConfig, rubric) -> TrainConfig:
    """The config for this rubric: overrides must name its dimensions; a shared LoRA ignores them."""
    unknown = sorted(set(config.dimension_overrides) - set(rubric.dimension_names))
    if unknown:
        raise ConfigError(
            f"training config {config.name}: dimension_overrides names {', '.join(unknown)}, "
            f"not dimensions of rubric {rubric.name} ({', '.join(rubric.dimension_names)})"
        )
    if config.adapter_mode == "shared" and config.dimension_overrides:
        log.info(
            "one shared LoRA: the per-dimension overrides (%s) do not apply",
            ", ".join(sorted(config.dimension_overrides)),
        )
        config = config.model_copy(update={"dimension_overrides": {}})
    return config


def train_adapters(
    config: TrainConfig,
    dataset,
    base_dir: Path,
    out_dir: Path,
    *,
    command: str = "kidsart train",
    resume: bool = True,
    notes: str = NOTES,
    init_from: dict[str, Path] | None = None,
    version: str | None = None,
    continued_from: dict | None = None,
) -> list[Path]:
    """Train adapters for every dimension of `dataset` into out_dir/<dimension>; return their folders.
    `init_from` (dimension -> adapter folder) continues those adapters instead of starting fresh LoRAs
    (train.continue_training), with `version` and `continued_from` (dimension -> ContinuedFrom) in the manifests.

    (About 70 lines on purpose: the resume check, the data split, the shared encodings and the per-dimension
    loop are one sequence whose order fixes each adapter's seed and data; the manifests are RunRecord's.)"""
    import torch

    from adapters.hf_scoring import ScoringProcessor
    from adapters.manifest import read_base_ref
    from adapters.prompts import load_prompt_format

    rubric = dataset.rubric
    config = _checked_config(config, rubric)
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

    def labelled(indices: list[int], dim) -> list[tuple[int, Any]]:
        return [(i, dim) for i in indices if dim.name in dataset.samples[i].scores]

    unlabelled = [d.name for d in dims if not any(d.name in dataset.samples[i].scores for i in train_idx)]
    if unlabelled:
        raise DatasetError(f"no training row labels {unlabelled}: fill those columns in some rows, or leave them out")
    record = RunRecord(
        config,
        recipes,
        fingerprints,
        rubric,
        dims,
        base_ref,
        prompt_format.name,
        len(train_idx),
        len(val_idx),
        str(dataset.csv_path),
        command,
        notes,
        version,
        continued_from or {},
    )

    if config.adapter_mode == "shared":
        _train_shared(record, base_dir, scoring, encoded, train_idx, val_idx, label_of, targets, labelled)
        return [targets[d.name] for d in dims]

    for position, d in enumerate(dims):
        if d not in todo:
            continue
        start = time.perf_counter()
        seed = config.seed * 1000 + rubric.dimension_names.index(d.name)
        model, history = _fit(
            recipes[d.name],
            base_dir,
            scoring,
            encoded,
            labelled(train_idx, d),  # each adapter trains on the rows that label its dimension
            labelled(val_idx, d),
            rubric.levels,
            seed,
            label_of,
            d.name,
            (init_from or {}).get(d.name),
        )
        seconds = time.perf_counter() - start
        _save(model, targets[d.name], record.manifest(d.name, history, seconds, False))
        log.info("trained %s in %.1f s (%d/%d): %s", d.name, seconds, position + 1, len(dims), history[-1])
        del model
        torch.manual_seed(0)
    return [targets[d.name] for d in dims]


def _train_shared(
    record: RunRecord, base_dir, scoring, encoded, train_idx, val_idx, label_of, targets, labelled
) -> None:
    """The ablation's one LoRA for every dimension, saved once per dimension with that dimension's metrics."""
    config, rubric, dims = record.config, record.rubric, record.dims
    start = time.perf_counter()
    train_items = [item for d in dims for item in labelled(train_idx, d)]
    val_items = [item for d in dims for item in labelled(val_idx, d)]
    model, history = _fit(
        config, base_dir, scoring, encoded, train_items, val_items, rubric.levels, config.seed, label_of, "shared"
    )
    seconds = time.perf_counter() - start
    for d in dims:
        dim_hist = history
        if labelled(val_idx, d):
            from train.metrics import mae, spearman

            items = labelled(val_idx, d)
            pred = _predict(
                model, encoded, items, scoring.score_token_ids, rubric.levels, config.eval_batch_size, config.device
            )
            true = [label_of(it) for it in items]
            dim_hist = [
                *history[:-1],
                {
                    **history[-1],
                    "val_srcc": _round(spearman(pred, true)),
                    "val_mae": _round(mae(pred, true)),
                    "val_n": len(items),
                },
            ]
        _save(model, targets[d.name], record.manifest(d.name, dim_hist, seconds, True))

"""Supervised fine-tuning of the feedback adapter: one LoRA that writes a teacher's comment beside the scores.

`kidsart train-feedback` trains it from a dataset CSV with a `comment` column (the
shape of KidsArtBench's expert comments; `kidsart synth` writes synthetic ones).
Each example is the feedback prompt of `adapters.feedback` (the image, the
description when the row has one, and the row's scores listed highest first)
followed by the comment; the loss is cross-entropy on the comment's tokens only
(`train.encoded.answer_only_inputs`). The frozen vision tower's output per image
is computed once (`train.encoded.EncodedData`), as in RAFT training.

At serving the prompt carries *predicted* scores (RAIL expectations such as 3.7),
while a dataset has integer labels. So that the adapter reads the order of the
list rather than exact integers, each training prompt shows the labels with
uniform jitter of up to +-SCORE_JITTER, sorted back into the labels' order (the
ranking, and so the comment's strength and weakness, is unchanged).

The result is written atomically to OUT with a manifest (task: feedback, the
module name `feedback`, the rubric it reads, the per-epoch validation loss).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np

from adapters.feedback import FEEDBACK_MODULE, FEEDBACK_TASK, named_spans, ranked_scores
from train.config import TrainConfig
from train.encoded import IGNORE, EncodedData, answer_only_inputs, expand_image_tokens
from train.trainer import _load_base, _save, _set_threads, optimizer_step

log = logging.getLogger(__name__)

SCORE_JITTER = 0.4  # below half a level: rounded to one decimal, different labels never tie
# Share of training prompts shown without the row's description: a caller may or may not send one
# (kidsart score without --description, a district without that column). Trained always with it,
# the test base's adapter wrote nonsense for every image scored without a description.
DESCRIPTION_DROPOUT = 0.5
NOTES = (
    "Feedback adapter trained by supervised fine-tuning (cross-entropy on the comment tokens) on synthetic "
    "reference comments made by a grammar from each drawing's labels and facts (train/feedback_comments.py); "
    "on the small test base its comments restate synthetic drawing rules, not art judgement."
)


def jittered_scores(
    rng: np.random.Generator, rubric, labels: dict[str, int], jitter: float = SCORE_JITTER
) -> dict[str, float]:
    """Labels with uniform jitter, re-sorted so the ranking (highest first, ties in rubric order) is the labels'."""
    order = [name for name, _ in ranked_scores(rubric, labels)]
    values = sorted(
        (np.clip(labels[n] + rng.uniform(-jitter, jitter), 1.0, float(max(rubric.levels))) for n in order), reverse=True
    )
    return {name: round(float(v), 1) for name, v in zip(order, values, strict=True)}


class FeedbackBatches:
    """Feedback prompts + comments over cached image features, with the loss on the comment only."""

    def __init__(self, scoring, rubric, encoded: EncodedData, name_weight: float = 1.0):
        self.scoring, self.rubric, self.encoded, self.name_weight = scoring, rubric, encoded, name_weight
        merge = scoring.processor.image_processor.merge_size
        self.image_tokens = int(encoded.grids[0].prod()) // merge**2

    def batch(
        self, indices: list[int], scores: list[dict[str, float]], keep_description: list[bool] | None = None
    ) -> dict:
        import torch
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        samples = [self.encoded.samples[i] for i in indices]
        prompts = [
            expand_image_tokens(
                self.scoring.feedback_prompt_text(self.rubric, s, sample.description if keep else None),
                self.image_tokens,
            )
            for s, sample, keep in zip(scores, samples, keep_description or [True] * len(samples), strict=True)
        ]
        comments = [sample.comment for sample in samples]
        spans = [[(start, end) for _, start, end in named_spans(c, self.rubric)[:2]] for c in comments]
        inputs = answer_only_inputs(
            self.scoring.processor.tokenizer, prompts, comments, weighted_spans=spans, span_weight=self.name_weight
        )
        return {
            **inputs,
            "image_grid_thw": torch.cat([self.encoded.grids[i] for i in indices]),
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithPooling(pooler_output=tuple(self.encoded.features[i] for i in indices))
            },
        }


def comment_loss(model, batch: dict):
    """Cross-entropy on the comment tokens, each weighted by `batch["weights"]` (the named strength and
    weakness count `name_weight` times), normalised by the total weight."""
    import torch

    inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights", "in_span")}
    logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels, weights = batch["labels"][:, 1:], batch["weights"][:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE, reduction="none"
    ).view_as(weights)
    return (per_token * weights).sum() / weights.sum().clamp_min(1.0)


def _validate(model, batches: FeedbackBatches, val_idx: list[int], samples, batch_size: int) -> dict:
    """Plain cross-entropy per comment token on the validation split, and the teacher-forced accuracy of
    the tokens naming the strength and weakness (whether the adapter reads them off the prompt)."""
    import torch

    if not val_idx:
        return {"val_loss": None, "val_name_accuracy": None}
    model.eval()
    losses, hits, names = [], 0, 0
    with torch.no_grad():
        for start in range(0, len(val_idx), batch_size):
            idx = val_idx[start : start + batch_size]
            scores = [{k: float(v) for k, v in samples[i].scores.items()} for i in idx]
            batch = batches.batch(idx, scores)
            out = model(**{k: v for k, v in batch.items() if k not in ("weights", "in_span")}, use_cache=False)
            losses.append(float(out.loss) * len(idx))
            is_name = batch["in_span"][:, 1:]
            hits += int(((out.logits[:, :-1].argmax(-1) == batch["labels"][:, 1:]) & is_name).sum())
            names += int(is_name.sum())
    model.train()
    return {
        "val_loss": round(sum(losses) / len(val_idx), 5),
        "val_name_accuracy": round(hits / names, 4) if names else None,
    }


def _feedback_manifest(
    config: TrainConfig,
    dataset,
    base_ref,
    prompt_format: str,
    n_train: int,
    n_val: int,
    history: list[dict],
    seconds: float,
    command: str,
):
    from adapters.manifest import AdapterManifest, LoraShape, Provenance

    rubric = dataset.rubric
    return AdapterManifest(
        name=FEEDBACK_MODULE,
        version=config.version,
        dimension=FEEDBACK_MODULE,
        task=FEEDBACK_TASK,
        rubric=rubric.name,
        base=base_ref,
        lora=LoraShape(rank=config.rank, alpha=config.alpha, target_modules=config.target_modules),
        provenance=Provenance(
            method="sft_cross_entropy",
            created_by=command,
            seed=config.seed,
            training_config={
                **config.model_dump(mode="json", exclude={"dimension_overrides"}),
                "fingerprint": config.fingerprint(),
                "rubric": rubric.name,
                "n_train": n_train,
                "n_val": n_val,
                "score_jitter": SCORE_JITTER,
                "description_dropout": DESCRIPTION_DROPOUT,
                "data": str(dataset.csv_path),
            },
            data_hash=dataset.content_hash(),
            notes=NOTES,
        ),
        prompt_format=prompt_format,
        metrics={
            "val_loss": history[-1]["val_loss"],
            "val_name_accuracy": history[-1]["val_name_accuracy"],
            "val_n": n_val,
            "train_seconds": round(seconds, 1),
            "history": history,
        },
    )


def train_feedback(
    config: TrainConfig, dataset, base_dir: Path, out_dir: Path, *, command: str = "kidsart train-feedback"
) -> Path:
    """Train the feedback adapter on `dataset` (rows with comments) into `out_dir`; return the folder."""
    import torch
    from peft import get_peft_model
    from tqdm import tqdm

    from adapters.hf_scoring import ScoringProcessor
    from adapters.manifest import read_base_ref
    from adapters.prompts import load_prompt_format
    from train.init_adapters import lora_config

    _set_threads(config)
    rubric = dataset.rubric
    started = time.perf_counter()
    base_ref = read_base_ref(base_dir)
    prompt_format = load_prompt_format(config.prompt_format)
    scoring = ScoringProcessor.load(base_dir, rubric, config.image_size, prompt_format)
    torch.manual_seed(config.seed)
    model = _load_base(base_dir, config)
    encoded = EncodedData(scoring, rubric, dataset.samples, config.image_size, model)
    batches = FeedbackBatches(scoring, rubric, encoded, config.name_weight)
    index = {s.name: i for i, s in enumerate(dataset.samples)}
    train_samples, val_samples = dataset.split(config.val_fraction, config.seed)
    train_idx, val_idx = [index[s.name] for s in train_samples], [index[s.name] for s in val_samples]

    model = get_peft_model(model, lora_config(config.rank, config.alpha, config.target_modules, config.dropout))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    total = math.ceil(len(train_idx) / config.batch_size) * config.epochs
    history, step = [], 0
    for epoch in range(config.epochs):
        order = rng.permutation(len(train_idx))
        running = []
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"feedback epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            leave=False,
        )
        for start in bar:
            idx = [train_idx[j] for j in order[start : start + config.batch_size]]
            scores = [jittered_scores(rng, rubric, dataset.samples[i].scores) for i in idx]
            keep = (rng.random(len(idx)) >= DESCRIPTION_DROPOUT).tolist()
            loss = comment_loss(model, batches.batch(idx, scores, keep))
            loss.backward()
            optimizer_step(optimizer, params, step, total, config)
            step += 1
            running.append(float(loss.detach()))
            bar.set_postfix(loss=f"{np.mean(running[-20:]):.3f}")
        record = {
            "epoch": epoch + 1,
            "train_loss": round(float(np.mean(running)), 5),
            **_validate(model, batches, val_idx, dataset.samples, config.eval_batch_size),
        }
        history.append(record)
        log.info("feedback epoch %d: %s", epoch + 1, record)
    seconds = time.perf_counter() - started
    manifest = _feedback_manifest(
        config, dataset, base_ref, prompt_format.name, len(train_idx), len(val_idx), history, seconds, command
    )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _save(model, out_dir, manifest)
    log.info("trained the feedback adapter in %.1f s: %s", seconds, history[-1])
    return out_dir

"""What every adapter manifest of one training run records: the resolved recipe, the data, the base, the
metrics, and for a continued run (`kidsart train --init-from`) the parent adapter and the corrections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from train.config import TrainConfig

NOTES = (
    "Trained with RAFT on procedurally drawn synthetic images whose labels are set by drawing parameters "
    "(train/synth.py). Scores reflect those synthetic rules on the small pre-trained test base (docs/test-base.md), "
    "not art judgement."
)


@dataclass
class RunRecord:
    """What every adapter's manifest of one training run records (each with its own resolved recipe)."""

    config: TrainConfig
    recipes: dict[str, TrainConfig]
    fingerprints: dict[str, dict]
    rubric: Any
    dims: list
    base_ref: Any
    prompt_format: str
    n_train: int
    n_val: int
    data: str
    command: str
    notes: str
    version: str | None = None  # None: the config's
    continued_from: dict[str, Any] = field(default_factory=dict)  # dimension -> adapters.manifest.ContinuedFrom

    def training_config(self, dim_name: str) -> dict:
        recipe = self.recipes[dim_name]
        return {
            **recipe.model_dump(mode="json", exclude={"dimension_overrides"}),
            "fingerprint": recipe.fingerprint(),
            "rubric": self.rubric.name,
            "dimensions": [d.name for d in self.dims],
            "n_train": self.n_train,
            "n_val": self.n_val,
            "data": self.data,
        }

    def manifest(self, dim_name: str, history: list, seconds: float, shared: bool):
        from adapters.manifest import AdapterManifest, LoraShape, Provenance

        config, final = self.config, (history[-1] if history else {})
        method = ("raft" if config.loss == "raft" else "cross_entropy") + (
            "+ce" if config.loss == "raft" and config.ce_weight > 0 else ""
        )
        return AdapterManifest(
            name=dim_name,
            version=self.version or config.version,
            dimension=dim_name,
            rubric=self.rubric.name,
            base=self.base_ref,
            lora=LoraShape(rank=config.rank, alpha=config.alpha, target_modules=config.target_modules),
            provenance=Provenance(
                method=method + ("+continued" if dim_name in self.continued_from else ""),
                created_by=self.command,
                seed=config.seed,
                training_config=self.training_config(dim_name),
                data_hash=self.fingerprints[dim_name]["data_hash"],
                notes=self.notes + (" One LoRA shared by all dimensions (ablation)." if shared else ""),
                continued_from=self.continued_from.get(dim_name),
            ),
            prompt_format=self.prompt_format,
            metrics={
                "val_srcc": final.get("val_srcc"),
                "val_mae": final.get("val_mae"),
                "val_n": final.get("val_n"),
                "train_seconds": round(seconds, 1),
                "history": history,
            },
        )

"""Untrained but distinct LoRA adapters, made deterministically.

PEFT initialises LoRA B to zero, which would make every adapter the identity and
every dimension score alike. Here B is drawn from a seeded normal per dimension,
so each adapter shifts the score distribution differently. These are the
"untrained" baselines that trained adapters are compared against.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from adapters.manifest import AdapterManifest, BaseRef, LoraShape, Provenance, read_base_ref, write_manifest
from adapters.rubric import Rubric

log = logging.getLogger(__name__)

DEFAULT_TARGET_MODULES = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj)"


def lora_config(
    rank: int = 8, alpha: float = 16, target_modules: str | list[str] = DEFAULT_TARGET_MODULES, dropout: float = 0.0
):
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=target_modules, lora_dropout=dropout, bias="none")


def tidy_peft_folder(adapter_dir: Path, base_model_id: str) -> None:
    """Make a PEFT folder machine-independent: base id instead of a local path, no boilerplate README."""
    import json

    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model_id
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (adapter_dir / "README.md").unlink(missing_ok=True)


def make_untrained_adapters(
    base_dir: Path,
    rubric: Rubric,
    out_dir: Path,
    *,
    seed: int = 0,
    rank: int = 8,
    alpha: float = 16,
    b_std: float = 0.05,
) -> list[Path]:
    """Write one seeded, non-zero LoRA per rubric dimension to out_dir/<dimension>."""
    from peft import get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base_ref: BaseRef = read_base_ref(base_dir)
    written = []
    for index, dim in enumerate(rubric.dimensions):
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
        torch.manual_seed(seed * 1000 + index)
        peft_model = get_peft_model(model, lora_config(rank, alpha))
        generator = torch.Generator().manual_seed(seed * 1000 + index)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * b_std)
        target = out_dir / dim.name
        target.mkdir(parents=True, exist_ok=True)
        peft_model.save_pretrained(target)
        tidy_peft_folder(target, base_ref.model_id)
        manifest = AdapterManifest(
            name=dim.name,
            version="init",
            dimension=dim.name,
            rubric=rubric.name,
            base=base_ref,
            lora=LoraShape(rank=rank, alpha=alpha, target_modules=DEFAULT_TARGET_MODULES),
            provenance=Provenance(
                method="deterministic-init",
                created_by="kidsart init-adapters",
                seed=seed * 1000 + index,
                notes="untrained: LoRA B drawn from a seeded normal so dimensions differ; scores carry no meaning",
            ),
        )
        write_manifest(target, manifest)
        written.append(target)
        log.info("wrote untrained adapter %s", target)
    return written

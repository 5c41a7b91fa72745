"""Fabricate checkpoints in the published KidsArtBench layout on the tiny base (for the import tests).

As their training script saves them: PEFT with their LoraConfig on Qwen2.5-VL, one
model per dimension, `save_pretrained` to `dimension_<dim>/` (last step) and
`dimension_<dim>/best_model/` (best step). LoRA B starts at zero in PEFT, so both
factors are drawn from a fixed seed to give every adapter a visible effect; the
last-step copy gets other weights, so a test can tell which one was served.
`old_keys` dimensions are saved in the older transformers' key spelling
(`model.layers.` instead of `model.language_model.layers.`).
"""

from __future__ import annotations

from pathlib import Path

THEIR_LORA = dict(
    r=8,
    lora_alpha=16,
    target_modules=["q_proj", "v_proj", "k_proj", "o_proj"],
    lora_dropout=0.05,
    bias="none",
    task_type="CAUSAL_LM",
)


def their_prompt(dimension: str) -> str:
    """Their inference sentence, written out here independently of our format file."""
    return (
        f"<image>Assess the student's artwork based on the '{dimension}' criterion and provide a score (1-5). "
        "Only output a score(1-5)."
    )


def _respell_old(folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(str(path))
    old = {
        k.replace("base_model.model.model.language_model.", "base_model.model.model."): v for k, v in tensors.items()
    }
    save_file(old, str(path), metadata={"format": "pt"})


def fabricate(
    base_dir: Path,
    out: Path,
    dimensions: list[str],
    *,
    seed: int,
    old_keys: tuple[str, ...] = (),
    scale: float = 0.3,
    lora_overrides: dict | None = None,
    base_name: str | None = None,
) -> Path:
    """Write `out/dimension_<dim>/{,best_model/}` for each dimension; returns `out`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    generator = torch.Generator().manual_seed(seed)
    for dim in dimensions:
        base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(**{**THEIR_LORA, **(lora_overrides or {})}))
        for checkpoint in ("last", "best"):
            with torch.no_grad():
                for name, param in model.named_parameters():
                    if "lora_" in name:
                        param.copy_(torch.randn(param.shape, generator=generator) * scale)
            folder = out / f"dimension_{dim}" / ("best_model" if checkpoint == "best" else "")
            model.save_pretrained(folder)
            if base_name is not None:
                import json

                config_path = folder / "adapter_config.json"
                config = json.loads(config_path.read_text())
                config["base_model_name_or_path"] = base_name
                config_path.write_text(json.dumps(config))
            if dim in old_keys:
                _respell_old(folder)
    return out

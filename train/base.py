"""Make a pre-trained test base from its recipe, and check a regeneration against the committed fixture.

A base whose making involves training is a committed fixture: float results of
training differ between CPUs (AVX2 vs AVX-512, native bf16 or not), so every
machine loads the same committed bytes and the committed adapters stay bound to
its hash. `kidsart build-base --profile tiny` regenerates it from the recipe into
the profile's `rebuild_path` (never over the committed folder); `--check` then
compares the two:

- config and tokenizer files must be byte-identical (the tokenizer is trained on
  the frozen corpus, the config comes from the profile): otherwise exit 1;
- weights: the largest absolute difference per tensor; on a machine with the same
  CPU flags as the one recorded in the fixture's manifest they must be identical
  (exit 1 otherwise); on a machine whose CPU differs the difference is reported;
- the committed adapters' RAIL scores on a fixed image set with each base (mean and
  largest absolute difference per dimension), reported in both cases.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import yaml

from adapters.base_builder import random_base, save_base
from adapters.errors import ConfigError
from adapters.machine import cpu_model_and_flags
from adapters.manifest import BASE_MANIFEST_NAME, BaseRef
from adapters.profiles import Profile

log = logging.getLogger(__name__)

# Files that must be byte-identical between the fixture and a regeneration.
EXACT_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "processor_config.json",
    "preprocessor_config.json",
    "generation_config.json",
)
CHECK_IMAGE_SEEDS = range(31_000, 31_012)  # fixed image set for the score comparison (no dataset uses it)


def build_pretrained_base(profile: Profile, out_dir: Path | None = None) -> BaseRef:
    """Random init + two-stage pre-training (vision tower, then captions) per the profile's recipe, written to out_dir
    (default: its rebuild_path).
    """
    from train.pretrain import pretrain_base

    spec = profile.base.build
    if profile.base.source != "local" or spec is None:
        raise ConfigError(f"profile {profile.name!r} has a {profile.base.source} base; only local bases are built here")
    target = Path(out_dir) if out_dir else profile.base.resolved_rebuild_path
    if profile.base.fixture and target.resolve() == profile.base.resolved_path.resolve():
        raise ConfigError(
            f"{target} is the committed fixture of profile {profile.name!r}; regenerate into another folder"
        )
    model, processor = random_base(profile)
    if spec.pretrain is None:
        return save_base(profile, model, processor, target, note="random init from a config; not a pretrained model")
    summary = pretrain_base(model, processor, spec.pretrain, image_size=profile.image_size, seed=spec.seed)
    note = (
        "random init from a config and a tokenizer trained on a frozen text, then the vision tower pre-trained on "
        "the facts of synthetic drawings and the language model on image-text pairs about them (see `pretraining`); "
        "a test base, not a model of art"
    )
    return save_base(profile, model, processor, target, note=note, pretraining=summary)


def _tensor_differences(a_dir: Path, b_dir: Path) -> dict:
    from safetensors.numpy import load_file

    a, b = load_file(a_dir / "model.safetensors"), load_file(b_dir / "model.safetensors")
    if set(a) != set(b):
        return {
            "same_tensors": False,
            "only_in_fixture": sorted(set(a) - set(b)),
            "only_in_rebuild": sorted(set(b) - set(a)),
        }
    import numpy as np

    diffs = {
        k: float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
        if a[k].shape == b[k].shape
        else math.inf
        for k in a
    }
    worst = max(diffs, key=diffs.get)
    return {
        "same_tensors": True,
        "identical": all(v == 0 for v in diffs.values()),
        "max_abs_diff": diffs[worst],
        "worst_tensor": worst,
        "tensors_differing": sum(v != 0 for v in diffs.values()),
        "tensors": len(diffs),
    }


def _adapter_scores(profile: Profile, base_dir: Path) -> dict[str, list[float]]:
    """RAIL scores of the profile's committed adapters on the fixed image set, with `base_dir` as base."""
    from adapters.images import normalize_image
    from adapters.manifest import load_deployment
    from serve.reference import ReferenceBackend  # train may use serve (never the reverse)
    from train.synth import render_artwork

    deployment = load_deployment(profile.deployment_path, max_lora_rank=profile.engine.max_lora_rank)
    backend = ReferenceBackend(profile, deployment, base_dir=base_dir)
    images = [normalize_image(render_artwork(seed)[0], profile.image_size) for seed in CHECK_IMAGE_SEEDS]
    scores = {d: [] for d in deployment.dimensions}
    for image in images:
        result = backend.score_image(image, deployment.dimensions, None)
        for d in deployment.dimensions:
            scores[d].append(float(result[d]["score"]))
    return scores


def check_rebuild(profile: Profile, rebuild_dir: Path) -> dict:
    """Compare a regenerated base with the committed fixture; `ok` False means exit 1 (see module docstring)."""
    fixture = profile.base.resolved_path
    recorded = yaml.safe_load((fixture / BASE_MANIFEST_NAME).read_text(encoding="utf-8")) or {}
    made_on = recorded.get("made_on", {})
    model, flags = cpu_model_and_flags()
    same_cpu = flags == made_on.get("cpu_flags")
    files = {}
    for name in EXACT_FILES:
        a, b = fixture / name, rebuild_dir / name
        if a.exists() or b.exists():
            files[name] = a.exists() and b.exists() and a.read_bytes() == b.read_bytes()
    weights = _tensor_differences(fixture, rebuild_dir)
    fixture_scores, rebuild_scores = _adapter_scores(profile, fixture), _adapter_scores(profile, rebuild_dir)
    score_diff = {
        d: {
            "mean_abs": round(
                sum(abs(x - y) for x, y in zip(fixture_scores[d], rebuild_scores[d], strict=True))
                / len(fixture_scores[d]),
                6,
            ),
            "max_abs": round(max(abs(x - y) for x, y in zip(fixture_scores[d], rebuild_scores[d], strict=True)), 6),
        }
        for d in fixture_scores
    }
    config_ok = all(files.values())
    weights_identical = bool(weights.get("identical"))
    if not config_ok:
        case, ok = "config or tokenizer differ from the fixture's", False
    elif same_cpu:
        case = "same CPU flags as the fixture's maker: weights must be bit-identical"
        ok = weights_identical
    else:
        case = "CPU differs from the fixture's maker: weight and score differences are reported, not failed"
        ok = bool(weights.get("same_tensors"))
    return {
        "ok": ok,
        "case": case,
        "this_cpu": {"model": model, "flags": flags},
        "fixture_cpu": {"model": made_on.get("cpu_model"), "flags": made_on.get("cpu_flags")},
        "same_cpu_flags": same_cpu,
        "files_identical": files,
        "weights": weights,
        "adapter_scores": {
            "images": len(CHECK_IMAGE_SEEDS),
            "image_seeds": f"{CHECK_IMAGE_SEEDS.start}..{CHECK_IMAGE_SEEDS.stop - 1}",
            "difference_by_dimension": score_diff,
        },
        "fixture": str(fixture),
        "rebuild": str(rebuild_dir),
    }

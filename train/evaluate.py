"""`kidsart eval` and `kidsart compare-adapters`: score a labelled dataset, report agreement.

Backends: `reference` (transformers + PEFT, in-process) and `router` (the HTTP API,
`POST {url}/v1/score`, called from a thread pool). Predictions are RAIL expected
scores, or with `decode="argmax"` the most probable level; the metrics, their
conventions and the report's structure are `train.metrics`'.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from adapters.errors import ConfigError, KidsArtError
from train.metrics import build_report

log = logging.getLogger(__name__)


class EvalBackendError(KidsArtError):
    """The scoring backend failed or returned something unusable during evaluation."""

    kind = "eval_backend_error"


# ---------------------------------------------------------------- backends


def score_reference(dataset, profile, deployment) -> list[dict]:
    """Scores of every sample from the in-process reference backend (one image at a time)."""
    from PIL import Image
    from tqdm import tqdm

    from serve.reference import ReferenceBackend

    backend = ReferenceBackend(profile, deployment)
    results = []
    for sample in tqdm(dataset.samples, desc="eval reference", unit="img"):
        with Image.open(sample.image_path) as img:
            image = backend.scoring.prepare(img)
        results.append(backend.score_image(image, dataset.dimensions, sample.description))
    return results


def score_router(dataset, url: str, *, concurrency: int = 16, api_key: str | None = None) -> list[dict]:
    """Scores of every sample from the router's HTTP API (`POST {url}/v1/score`), in a thread pool, through
    the one scoring-API client (`serve.client`: its retry policy and key)."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    from adapters.errors import KidsArtError
    from serve.client import ScoringClient

    def one(sample) -> dict:
        try:
            answer = client.score_file(sample.image_path, request_id=sample.name, description=sample.description)
        except KidsArtError as exc:
            raise EvalBackendError(f"router {url} failed on {sample.name}: {exc}") from exc
        missing = answer.missing(dataset.dimensions)
        if missing:
            raise EvalBackendError(f"router response for {sample.name} lacks dimensions {missing}")
        return {d: s.model_dump() for d, s in answer.scores.items()}

    with (
        ScoringClient(url, api_key=api_key, max_connections=concurrency) as client,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        return list(tqdm(pool.map(one, dataset.samples), total=len(dataset.samples), desc="eval router", unit="img"))


def score_dataset(dataset, profile, deployment, backend: str, *, url: str, concurrency: int = 16) -> list[dict]:
    """Every sample's scores from the `reference` backend (the deployment in-process) or a `router` at `url`."""
    if backend == "reference":
        import torch

        torch.set_num_threads(2)
        return score_reference(dataset, profile, deployment)
    if backend == "router":
        return score_router(dataset, url, concurrency=concurrency)
    raise ConfigError(f"unknown backend {backend!r} (reference or router)")


DECODINGS = ("rail", "argmax")


def decode_scores(scores: list[dict], dimensions: list[str], levels, decode: str = "rail") -> dict[str, list[float]]:
    """Per-dimension predictions from backend results: RAIL expected value, or the most probable level (argmax)."""
    if decode == "rail":
        return {d: [float(s[d]["score"]) for s in scores] for d in dimensions}
    if decode == "argmax":
        return {d: [float(levels[int(np.argmax(s[d]["probs"]))]) for s in scores] for d in dimensions}
    raise ValueError(f"unknown decoding {decode!r} ({' or '.join(DECODINGS)})")


def deployment_of(profile, deployment_path: Path | None):
    """The deployment set named, on the profile's base; else the profile's own."""
    from adapters.manifest import load_deployment, load_profile_deployment

    if deployment_path is None:
        return load_profile_deployment(profile)
    return load_deployment(
        Path(deployment_path),
        max_lora_rank=profile.engine.max_lora_rank,
        base_dir=profile.base.resolved_path if profile.base.source == "local" else None,
    )


def evaluate(
    csv_path: Path,
    images_dir: Path,
    *,
    backend: str,
    decode: str = "rail",
    profile_name: str = "tiny",
    deployment_path: Path | None = None,
    url: str = "http://127.0.0.1:8000",
    dimensions: list[str] | None = None,
    concurrency: int = 16,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Score a dataset with a backend and build the report (plus a `meta` block with runtime and adapters)."""

    from adapters.profiles import load_profile
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset

    profile = load_profile(profile_name)
    deployment = deployment_of(profile, deployment_path)
    rubric = deployment.rubric if backend == "reference" else load_rubric(profile.rubric)
    dims = dimensions or (deployment.dimensions if backend == "reference" else rubric.dimension_names)
    dataset = load_dataset(csv_path, images_dir, rubric, dims)
    if decode not in DECODINGS:
        raise ValueError(f"unknown decoding {decode!r} ({' or '.join(DECODINGS)})")
    start = time.perf_counter()
    scores = score_dataset(dataset, profile, deployment, backend, url=url, concurrency=concurrency)
    elapsed = time.perf_counter() - start
    predictions = decode_scores(scores, dataset.dimensions, rubric.levels, decode)
    labels = {d: [s.scores[d] for s in dataset.samples] for d in dataset.dimensions}
    grades = [s.grade for s in dataset.samples] if dataset.has_grades else None
    report = build_report(predictions, labels, grades, rubric.levels, n_boot=n_boot, seed=seed)
    add_interval_coverage(report, scores, labels)
    adapters_used = {d: scores[0][d].get("adapter") for d in dataset.dimensions} if scores else {}
    report["meta"] = {
        "backend": backend,
        "decode": decode,
        "url": url if backend == "router" else None,
        "deployment": str(deployment.source) if backend == "reference" else None,
        "rubric": rubric.name,
        "n_images": len(dataset),
        "data_hash": dataset.content_hash(),
        "adapters": adapters_used,
        "runtime_s": round(elapsed, 2),
        "images_per_s": round(len(dataset) / elapsed, 3) if elapsed > 0 else None,
        "bootstrap": {"n_boot": n_boot, "seed": seed, "interval": "percentile 95%"},
    }
    return report


def add_interval_coverage(report: dict, scores: list[dict], labels: dict[str, list]) -> None:
    """Each dimension's empirical `interval_coverage` (share of labels inside the answer's interval) and their mean
    into the report, with the `interval_level` asked for; nothing when the answers carry no interval."""
    from adapters.calibration import covered

    levels = set()
    for dim, column in labels.items():
        if not scores or any("interval" not in s[dim] for s in scores):
            continue
        inside = [covered(label, s[dim]["interval"]) for label, s in zip(column, scores, strict=True)]
        report["dimensions"][dim]["interval_coverage"] = sum(inside) / len(inside)
        levels.update(s[dim]["interval_level"] for s in scores)
    found = [m["interval_coverage"] for m in report["dimensions"].values() if "interval_coverage" in m]
    if found:
        report["mean"]["interval_coverage"] = sum(found) / len(found)
        report["mean"]["interval_coverage_min"] = min(found)
        report["interval_level"] = levels.pop() if len(levels) == 1 else sorted(levels)


# ---------------------------------------------------------------- reproduction check


def _scores_of_both(
    base_dir, image_size: int, manifest, rubric, dim: str, drawings, reference: Path, candidate: Path
) -> dict:
    """RAIL expected scores of the drawings under the reference and the candidate adapter (same base, inputs)."""
    import torch
    from peft import PeftModel
    from transformers import Qwen2_5_VLForConditionalGeneration

    from adapters.hf_scoring import ScoringProcessor, score_token_logits
    from adapters.prompts import load_prompt_format
    from adapters.rail import expected_score

    prompt_format = load_prompt_format(manifest.prompt_format)
    scoring = ScoringProcessor.load(base_dir, rubric, image_size, prompt_format)
    images = [scoring.prepare(drawing) for drawing in drawings]
    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, reference, adapter_name="ref")
    model.load_adapter(candidate, adapter_name="cand")
    model.eval()
    inputs = scoring.batch_inputs(rubric, rubric.dimension(dim), images)
    scores = {}
    with torch.no_grad():
        for name in ("ref", "cand"):
            model.set_adapter(name)
            scores[name] = expected_score(
                score_token_logits(model, inputs, scoring.score_token_ids).double(), rubric.levels
            )[1]
    return scores


def compare_adapter_sets(
    reference_dir: Path,
    candidate_dir: Path,
    *,
    profile_name: str = "tiny",
    n_images: int = 24,
    seed: int = 20_000,
    score_tolerance: float = 0.1,
    srcc_tolerance: float = 0.1,
) -> dict:
    """Compare two folders of per-dimension adapters (e.g. committed vs retrained).

    For each dimension: the largest absolute LoRA weight difference, the mean and
    largest absolute difference of RAIL expected scores on `n_images` synthetic
    images drawn from `seed` (not a training seed), and the difference of the
    manifests' validation Spearman. `ok` holds when the mean score difference is at
    most `score_tolerance` and the validation Spearman differs by at most
    `srcc_tolerance` (bit-identical adapters give zeros on the same machine).
    """
    import torch
    from safetensors.torch import load_file

    from adapters.manifest import load_manifest
    from adapters.profiles import load_profile
    from adapters.rubric import load_rubric
    from train.synth import render_artwork

    profile = load_profile(profile_name)
    base_dir = profile.base.resolved_path
    torch.set_num_threads(2)
    dims = sorted(p.name for p in Path(reference_dir).iterdir() if (p / "manifest.yaml").is_file())
    results: dict = {}
    drawings = [render_artwork(seed + i)[0] for i in range(n_images)]
    for dim in dims:
        ref_m, cand_dir = load_manifest(Path(reference_dir) / dim), Path(candidate_dir) / dim
        if not (cand_dir / "manifest.yaml").is_file():
            results[dim] = {"ok": False, "error": f"{cand_dir} has no adapter"}
            continue
        cand_m = load_manifest(cand_dir)
        rubric = load_rubric(ref_m.rubric)
        a = load_file(str(Path(reference_dir) / dim / "adapter_model.safetensors"))
        b = load_file(str(cand_dir / "adapter_model.safetensors"))
        weight_diff = max(float((a[k] - b[k]).abs().max()) for k in a) if set(a) == set(b) else float("inf")
        scores = _scores_of_both(
            base_dir, profile.image_size, ref_m, rubric, dim, drawings, Path(reference_dir) / dim, cand_dir
        )
        delta = (scores["ref"] - scores["cand"]).abs()
        srcc_a, srcc_b = ref_m.metrics.get("val_srcc"), cand_m.metrics.get("val_srcc")
        srcc_delta = abs(srcc_a - srcc_b) if srcc_a is not None and srcc_b is not None else None
        results[dim] = {
            "max_weight_diff": weight_diff,
            "mean_score_diff": float(delta.mean()),
            "max_score_diff": float(delta.max()),
            "val_srcc": [srcc_a, srcc_b],
            "ok": float(delta.mean()) <= score_tolerance and (srcc_delta is None or srcc_delta <= srcc_tolerance),
        }
    return {
        "dimensions": results,
        "ok": all(r["ok"] for r in results.values()),
        "tolerance": {
            "mean_score_diff": score_tolerance,
            "val_srcc_diff": srcc_tolerance,
            "images": n_images,
            "seed": seed,
        },
    }

"""Evaluation: agreement metrics with bootstrap confidence intervals, and `kidsart eval`.

Metrics per dimension (predictions are RAIL expected scores, or with `decode="argmax"`
the most probable level; labels integer levels): Spearman (srcc), Pearson (plcc),
MAE, MSE and quadratic weighted kappa (qwk, on predictions rounded and clipped to
the rubric's levels). The conventions are KidsArtBench's own metric code's
(scipy correlations; QWK on numpy-rounded predictions, i.e. round half to even),
so our figures compare with the paper's; their "overall" MSE and MAE pool all
(image, dimension) pairs, which equals our mean over dimensions when every
dimension has the same images. Each comes with a
percentile bootstrap 95% interval (seeded resampling of artworks). The report also
holds the mean over dimensions and, when grades are present, the same broken down
by grade. Backends: `reference` (transformers + PEFT, in-process) and `router`
(the HTTP API, `POST {url}/v1/score`, called from a thread pool).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from adapters.errors import KidsArtError

log = logging.getLogger(__name__)

METRICS = ("srcc", "plcc", "mae", "mse", "qwk")
CI_METRICS = METRICS


class EvalBackendError(KidsArtError):
    """The scoring backend failed or returned something unusable during evaluation."""

    kind = "eval_backend_error"


# ---------------------------------------------------------------- metrics

def spearman(pred: Sequence[float], true: Sequence[float]) -> float:
    """Spearman rank correlation (scipy); NaN when either side is constant."""
    from scipy.stats import spearmanr

    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(spearmanr(p, t).statistic)


def pearson(pred: Sequence[float], true: Sequence[float]) -> float:
    """Pearson correlation (scipy); NaN when either side is constant."""
    from scipy.stats import pearsonr

    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if len(p) < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(pearsonr(p, t).statistic)


def mae(pred: Sequence[float], true: Sequence[float]) -> float:
    return float(np.mean(np.abs(np.asarray(pred, dtype=float) - np.asarray(true, dtype=float))))


def mse(pred: Sequence[float], true: Sequence[float]) -> float:
    return float(np.mean((np.asarray(pred, dtype=float) - np.asarray(true, dtype=float)) ** 2))


def quadratic_weighted_kappa(pred: Sequence[float], true: Sequence[float], levels: Sequence[int] = (1, 2, 3, 4, 5)) -> float:
    """Cohen's kappa with quadratic weights, computed as KidsArtBench's metric code computes it.

    Predictions are rounded with numpy (half to even: 2.5 -> 2, 3.5 -> 4) and clipped
    to `levels`; as in sklearn's `cohen_kappa_score(weights="quadratic")` with default
    labels, the matrix covers the levels that occur in either side and the weights are
    squared distances between their ranks. NaN when the expected disagreement is zero.
    """
    lv = list(levels)
    lo, hi = min(lv), max(lv)
    p = np.clip(np.round(np.asarray(pred, dtype=float)), lo, hi).astype(int)
    t = np.clip(np.asarray(true, dtype=float), lo, hi).astype(int)
    labels = np.union1d(p, t)
    k = len(labels)
    rank = {int(v): i for i, v in enumerate(labels)}
    observed = np.zeros((k, k))
    np.add.at(observed, ([rank[int(v)] for v in t], [rank[int(v)] for v in p]), 1.0)
    weights = np.array([[(i - j) ** 2 for j in range(k)] for i in range(k)], dtype=float)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / max(observed.sum(), 1.0)
    denominator = float((weights * expected).sum())
    if denominator == 0:
        return float("nan")
    return float(1.0 - (weights * observed).sum() / denominator)


def point_metrics(pred: Sequence[float], true: Sequence[float], levels: Sequence[int] = (1, 2, 3, 4, 5)) -> dict[str, float]:
    return {
        "srcc": spearman(pred, true),
        "plcc": pearson(pred, true),
        "mae": mae(pred, true),
        "mse": mse(pred, true),
        "qwk": quadratic_weighted_kappa(pred, true, levels),
    }


def bootstrap_ci(
    pred: Sequence[float], true: Sequence[float], metric: Callable[[np.ndarray, np.ndarray], float], *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of `metric` over resampled artworks (seeded). NaN resamples are dropped."""
    p, t = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    n = len(p)
    if n < 2:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    values = np.array([metric(p[i], t[i]) for i in idx], dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _fast_spearman(p: np.ndarray, t: np.ndarray) -> float:
    from scipy.stats import rankdata

    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(np.corrcoef(rankdata(p), rankdata(t))[0, 1])


def _fast_pearson(p: np.ndarray, t: np.ndarray) -> float:
    if np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    return float(np.corrcoef(p, t)[0, 1])


def metrics_with_ci(pred: Sequence[float], true: Sequence[float], levels: Sequence[int] = (1, 2, 3, 4, 5), *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Point metrics plus `<metric>_ci` bootstrap 95% intervals and the sample count `n`."""
    out: dict = point_metrics(pred, true, levels)
    fns = {
        "srcc": _fast_spearman,
        "plcc": _fast_pearson,
        "mae": lambda a, b: float(np.mean(np.abs(a - b))),
        "mse": lambda a, b: float(np.mean((a - b) ** 2)),
        "qwk": lambda a, b: quadratic_weighted_kappa(a, b, levels),
    }
    for name in CI_METRICS:
        out[f"{name}_ci"] = list(bootstrap_ci(pred, true, fns[name], n_boot=n_boot, seed=seed))
    out["n"] = len(pred)
    return out


def _mean_over(per_dim: dict[str, dict]) -> dict:
    mean = {}
    for name in METRICS:
        values = [d[name] for d in per_dim.values() if d[name] is not None and not (isinstance(d[name], float) and math.isnan(d[name]))]
        mean[name] = float(np.mean(values)) if values else float("nan")
    return mean


def build_report(predictions: dict[str, list[float]], labels: dict[str, list[int]], grades: list[int | None] | None, levels: Sequence[int], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """The eval.json structure: dimensions, mean, by_grade (empty when no grades)."""
    dims = {d: metrics_with_ci(predictions[d], labels[d], levels, n_boot=n_boot, seed=seed) for d in predictions}
    report: dict = {"dimensions": dims, "mean": _mean_over(dims), "by_grade": {}}
    if grades and any(g is not None for g in grades):
        for grade in sorted({g for g in grades if g is not None}):
            idx = [i for i, g in enumerate(grades) if g == grade]
            sub = {
                d: metrics_with_ci([predictions[d][i] for i in idx], [labels[d][i] for i in idx], levels, n_boot=n_boot, seed=seed)
                for d in predictions
            }
            report["by_grade"][str(grade)] = {"n": len(idx), "dimensions": sub, "mean": _mean_over(sub)}
    return _json_safe(report)


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    return value


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def markdown_table(report: dict) -> str:
    """A markdown table of the report's per-dimension metrics and their mean."""
    lines = [
        "| dimension | SRCC [95% CI] | PLCC | MAE | MSE | QWK |",
        "|---|---|---|---|---|---|",
    ]
    for dim, m in report["dimensions"].items():
        lo, hi = m["srcc_ci"]
        lines.append(f"| {dim} | {_fmt(m['srcc'])} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(m['plcc'])} | {_fmt(m['mae'])} | {_fmt(m['mse'])} | {_fmt(m['qwk'])} |")
    mean = report["mean"]
    lines.append(f"| **mean** | {_fmt(mean['srcc'])} | {_fmt(mean['plcc'])} | {_fmt(mean['mae'])} | {_fmt(mean['mse'])} | {_fmt(mean['qwk'])} |")
    if report.get("by_grade"):
        lines += ["", "| grade | n | mean SRCC | mean MAE | mean QWK |", "|---|---|---|---|---|"]
        for grade, g in report["by_grade"].items():
            lines.append(f"| {grade} | {g['n']} | {_fmt(g['mean']['srcc'])} | {_fmt(g['mean']['mae'])} | {_fmt(g['mean']['qwk'])} |")
    return "\n".join(lines)


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
            scores = client.score_file(sample.image_path, request_id=sample.name, description=sample.description).get("scores", {})
        except KidsArtError as exc:
            raise EvalBackendError(f"router {url} failed on {sample.name}: {exc}") from exc
        missing = [d for d in dataset.dimensions if d not in scores]
        if missing:
            raise EvalBackendError(f"router response for {sample.name} lacks dimensions {missing}")
        return scores

    with ScoringClient(url, api_key=api_key, max_connections=concurrency) as client, ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(tqdm(pool.map(one, dataset.samples), total=len(dataset.samples), desc="eval router", unit="img"))


DECODINGS = ("rail", "argmax")


def decode_scores(scores: list[dict], dimensions: list[str], levels, decode: str = "rail") -> dict[str, list[float]]:
    """Per-dimension predictions from backend results: RAIL expected value, or the most probable level (argmax)."""
    if decode == "rail":
        return {d: [float(s[d]["score"]) for s in scores] for d in dimensions}
    if decode == "argmax":
        return {d: [float(levels[int(np.argmax(s[d]["probs"]))]) for s in scores] for d in dimensions}
    raise ValueError(f"unknown decoding {decode!r} ({' or '.join(DECODINGS)})")


def _deployment(profile, deployment_path: Path | None):
    """The deployment set named, on the profile's base; else the profile's own."""
    from adapters.manifest import load_deployment, load_profile_deployment

    if deployment_path is None:
        return load_profile_deployment(profile)
    return load_deployment(Path(deployment_path), max_lora_rank=profile.engine.max_lora_rank,
                           base_dir=profile.base.resolved_path if profile.base.source == "local" else None)


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
    import torch

    from adapters.profiles import load_profile
    from adapters.rubric import load_rubric
    from train.dataset import load_dataset

    profile = load_profile(profile_name)
    deployment = _deployment(profile, deployment_path)
    rubric = deployment.rubric if backend == "reference" else load_rubric(profile.rubric)
    dims = dimensions or (deployment.dimensions if backend == "reference" else rubric.dimension_names)
    dataset = load_dataset(csv_path, images_dir, rubric, dims)
    if decode not in DECODINGS:
        raise ValueError(f"unknown decoding {decode!r} ({' or '.join(DECODINGS)})")
    start = time.perf_counter()
    if backend == "reference":
        torch.set_num_threads(2)
        scores = score_reference(dataset, profile, deployment)
    elif backend == "router":
        scores = score_router(dataset, url, concurrency=concurrency)
    else:
        raise ValueError(f"unknown backend {backend!r} (reference or router)")
    elapsed = time.perf_counter() - start
    predictions = decode_scores(scores, dataset.dimensions, rubric.levels, decode)
    labels = {d: [s.scores[d] for s in dataset.samples] for d in dataset.dimensions}
    grades = [s.grade for s in dataset.samples] if dataset.has_grades else None
    report = build_report(predictions, labels, grades, rubric.levels, n_boot=n_boot, seed=seed)
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


# ---------------------------------------------------------------- reproduction check

def _scores_of_both(base_dir, image_size: int, manifest, rubric, dim: str, drawings, reference: Path, candidate: Path) -> dict:
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
            scores[name] = expected_score(score_token_logits(model, inputs, scoring.score_token_ids).double(), rubric.levels)[1]
    return scores


def compare_adapter_sets(
    reference_dir: Path, candidate_dir: Path, *, profile_name: str = "tiny", n_images: int = 24, seed: int = 20_000,
    score_tolerance: float = 0.1, srcc_tolerance: float = 0.1,
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
        scores = _scores_of_both(base_dir, profile.image_size, ref_m, rubric, dim, drawings,
                                 Path(reference_dir) / dim, cand_dir)
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
    return {"dimensions": results, "ok": all(r["ok"] for r in results.values()), "tolerance": {"mean_score_diff": score_tolerance, "val_srcc_diff": srcc_tolerance, "images": n_images, "seed": seed}}

"""Agreement metrics between predicted and labelled scores, with bootstrap confidence intervals.

Per dimension (predictions are RAIL expected scores, or the most probable level; labels
integer levels): Spearman (srcc), Pearson (plcc), MAE, MSE and quadratic weighted kappa
(qwk, on predictions rounded and clipped to the rubric's levels). The conventions are
KidsArtBench's own metric code's (scipy correlations; QWK on numpy-rounded predictions,
i.e. round half to even), so our figures compare with the paper's; their "overall" MSE
and MAE pool all (image, dimension) pairs, which equals our mean over dimensions when
every dimension has the same images. Each comes with a percentile bootstrap 95% interval
(seeded resampling of artworks). A report also holds the mean over dimensions and, when
grades are present, the same broken down by grade.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

METRICS = ("srcc", "plcc", "mae", "mse", "qwk")
CI_METRICS = METRICS


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


def quadratic_weighted_kappa(
    pred: Sequence[float], true: Sequence[float], levels: Sequence[int] = (1, 2, 3, 4, 5)
) -> float:
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


def point_metrics(
    pred: Sequence[float], true: Sequence[float], levels: Sequence[int] = (1, 2, 3, 4, 5)
) -> dict[str, float]:
    return {
        "srcc": spearman(pred, true),
        "plcc": pearson(pred, true),
        "mae": mae(pred, true),
        "mse": mse(pred, true),
        "qwk": quadratic_weighted_kappa(pred, true, levels),
    }


def bootstrap_ci(
    pred: Sequence[float],
    true: Sequence[float],
    metric: Callable[[np.ndarray, np.ndarray], float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
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


def metrics_with_ci(
    pred: Sequence[float],
    true: Sequence[float],
    levels: Sequence[int] = (1, 2, 3, 4, 5),
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
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
        values = [
            d[name]
            for d in per_dim.values()
            if d[name] is not None and not (isinstance(d[name], float) and math.isnan(d[name]))
        ]
        mean[name] = float(np.mean(values)) if values else float("nan")
    return mean


def _grade_order(grade) -> tuple:
    """Numbers in numeric order, then text grades (district folder names) alphabetically."""
    return (0, grade, "") if isinstance(grade, int) else (1, 0, str(grade))


def build_report(
    predictions: dict[str, list[float]],
    labels: dict[str, list[int]],
    grades: list[int | None] | None,
    levels: Sequence[int],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """The eval.json structure: dimensions, mean, by_grade (empty when no grades)."""
    dims = {d: metrics_with_ci(predictions[d], labels[d], levels, n_boot=n_boot, seed=seed) for d in predictions}
    report: dict = {"dimensions": dims, "mean": _mean_over(dims), "by_grade": {}}
    if grades and any(g is not None for g in grades):
        for grade in sorted({g for g in grades if g is not None}, key=_grade_order):
            idx = [i for i, g in enumerate(grades) if g == grade]
            sub = {
                d: metrics_with_ci(
                    [predictions[d][i] for i in idx], [labels[d][i] for i in idx], levels, n_boot=n_boot, seed=seed
                )
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
        lines.append(
            f"| {dim} | {_fmt(m['srcc'])} [{_fmt(lo)}, {_fmt(hi)}] | {_fmt(m['plcc'])} | {_fmt(m['mae'])} | "
            f"{_fmt(m['mse'])} | {_fmt(m['qwk'])} |"
        )
    mean = report["mean"]
    lines.append(
        f"| **mean** | {_fmt(mean['srcc'])} | {_fmt(mean['plcc'])} | {_fmt(mean['mae'])} | {_fmt(mean['mse'])} | "
        f"{_fmt(mean['qwk'])} |"
    )
    if "interval_coverage" in mean:
        lines += [
            "",
            f"interval coverage at level {report['interval_level']}: mean {_fmt(mean['interval_coverage'])}, "
            f"lowest dimension {_fmt(mean['interval_coverage_min'])}",
        ]
    if report.get("by_grade"):
        lines += ["", "| grade | n | mean SRCC | mean MAE | mean QWK |", "|---|---|---|---|---|"]
        for grade, g in report["by_grade"].items():
            lines.append(
                f"| {grade} | {g['n']} | {_fmt(g['mean']['srcc'])} | {_fmt(g['mean']['mae'])} | "
                f"{_fmt(g['mean']['qwk'])} |"
            )
    return "\n".join(lines)

"""Evaluation metrics against known values, bootstrap intervals, report structure, malformed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from train.metrics import (
    bootstrap_ci,
    build_report,
    mae,
    markdown_table,
    metrics_with_ci,
    mse,
    pearson,
    quadratic_weighted_kappa,
    spearman,
)


def test_point_metrics_known_values():
    pred = [1.0, 2.0, 3.0, 4.0, 5.0]
    true = [1, 2, 3, 4, 5]
    assert spearman(pred, true) == pytest.approx(1.0)
    assert pearson(pred, true) == pytest.approx(1.0)
    assert mae(pred, true) == 0 and mse(pred, true) == 0
    assert quadratic_weighted_kappa(pred, true) == pytest.approx(1.0)
    assert spearman([5, 4, 3, 2, 1], true) == pytest.approx(-1.0)
    assert mae([2, 2, 2], [1, 2, 4]) == pytest.approx(1.0)
    assert mse([2, 2, 2], [1, 2, 4]) == pytest.approx(5 / 3)
    assert math.isnan(spearman([3, 3, 3], [1, 2, 3]))


def test_qwk_hand_computed():
    # 2x2 confusion on levels 1..2: classic example, kappa with quadratic weights = linear for 2 levels
    true = [1, 1, 2, 2]
    pred = [1, 2, 2, 2]
    # observed disagreement 1/4 weighted 1; expected: row (2,2) col (1,3) -> off-diagonal mass (2*3+2*1)/16 = 0.5
    assert quadratic_weighted_kappa(pred, true, levels=(1, 2)) == pytest.approx(1 - 0.25 / 0.5)
    # rounding as KidsArtBench's numpy code: half to even (2.5 -> 2, 3.5 -> 4); out of range clipped
    assert quadratic_weighted_kappa([0.2, 2.5, 3.5, 7.0], [1, 2, 4, 5]) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([0.2, 2.5, 3.5, 7.0], [1, 3, 4, 5]) < 1.0


def test_qwk_uses_observed_levels_like_sklearn_default_labels():
    """sklearn's cohen_kappa_score (what KidsArtBench calls) weights by rank among the levels that occur.

    Levels {1, 3, 5} occur: ranks 0, 1, 2, so 1 vs 5 weighs (2-0)^2 = 4, not (5-1)^2 = 16, and
    1 vs 3 weighs 1. Hand computation for true [1, 3, 5, 5] and pred [1, 5, 5, 3]:
    observed weighted disagreement: (3->5) 1 + (5->3) 1 = 2; row sums (1, 1, 2), column sums (1, 1, 2),
    expected weighted = sum_ij w_ij r_i c_j / 4 = (1*1*1 + 4*1*2 + 1*1*1 + 1*1*2 + 4*2*1 + 1*2*1) / 4 = 22 / 4.
    """
    assert quadratic_weighted_kappa([1, 5, 5, 3], [1, 3, 5, 5]) == pytest.approx(1 - 2 / (22 / 4))


def test_matches_scipy_on_random_data():
    rng = np.random.default_rng(0)
    true = rng.integers(1, 6, 200)
    pred = true + rng.normal(0, 1.0, 200)
    assert spearman(pred, true) == pytest.approx(spearmanr(pred, true).statistic)
    assert pearson(pred, true) == pytest.approx(pearsonr(pred, true).statistic)


def test_bootstrap_ci_contains_point_and_is_seeded():
    rng = np.random.default_rng(1)
    true = rng.integers(1, 6, 120)
    pred = true + rng.normal(0, 1.2, 120)
    m = metrics_with_ci(pred, true, n_boot=300, seed=0)
    for name in ("srcc", "plcc", "mae", "mse", "qwk"):
        lo, hi = m[f"{name}_ci"]
        assert lo <= m[name] <= hi, name
        assert hi - lo > 0
    assert metrics_with_ci(pred, true, n_boot=300, seed=0) == m
    assert bootstrap_ci(pred, true, lambda a, b: float(np.mean(a - b)), n_boot=50, seed=3) == bootstrap_ci(
        pred, true, lambda a, b: float(np.mean(a - b)), n_boot=50, seed=3
    )


def test_report_structure_and_by_grade():
    rng = np.random.default_rng(2)
    labels = {"a": list(rng.integers(1, 6, 40)), "b": list(rng.integers(1, 6, 40))}
    preds = {d: [float(v) + rng.normal(0, 0.5) for v in labels[d]] for d in labels}
    grades = [1 + i % 3 for i in range(40)]
    report = build_report(
        preds, {d: [int(x) for x in v] for d, v in labels.items()}, grades, [1, 2, 3, 4, 5], n_boot=100
    )
    assert set(report) == {"dimensions", "mean", "by_grade"}
    assert set(report["dimensions"]["a"]) >= {"srcc", "srcc_ci", "plcc", "mae", "mse", "qwk"}
    assert report["mean"]["srcc"] == pytest.approx(
        (report["dimensions"]["a"]["srcc"] + report["dimensions"]["b"]["srcc"]) / 2
    )
    assert set(report["by_grade"]) == {"1", "2", "3"}
    assert "| a |" in markdown_table(report)
    constant = build_report({"a": [3.0] * 5}, {"a": [1, 2, 3, 4, 5]}, None, [1, 2, 3, 4, 5], n_boot=20)
    assert constant["dimensions"]["a"]["srcc"] is None  # NaN becomes null in JSON, never a made-up number


def test_eval_reference_backend_end_to_end(tiny_profile, tmp_path):
    """`evaluate` on a few synthetic images with the committed deployment (reference backend)."""
    from train.evaluate import evaluate
    from train.synth import write_dataset

    write_dataset(4, seed=123, out_dir=tmp_path)
    report = evaluate(
        tmp_path / "labels.csv",
        tmp_path / "images",
        backend="reference",
        dimensions=["color_richness", "line_texture"],
        n_boot=50,
    )
    assert set(report["dimensions"]) == {"color_richness", "line_texture"}
    assert report["meta"]["n_images"] == 4 and report["meta"]["runtime_s"] > 0


def test_eval_rejects_malformed_data(tiny_profile, tmp_path):
    from adapters.errors import DatasetError
    from train.evaluate import evaluate
    from train.synth import write_dataset

    write_dataset(3, seed=9, out_dir=tmp_path)
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    cells = lines[2].split(",")
    cells[1] = "9"
    lines[2] = ",".join(cells)
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="row 3"):
        evaluate(tmp_path / "labels.csv", tmp_path / "images", backend="reference", n_boot=10)

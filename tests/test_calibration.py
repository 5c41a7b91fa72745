"""Split-conformal intervals (adapters.calibration): the quantile's finite-sample rank, coverage on simulated
data, clipping, stale adapters left without an interval, and the block stored in a deployment set."""

import random
import shutil

import pytest

from adapters.calibration import Calibration, DimensionCalibration, calibrate, conformal_quantile, with_interval
from adapters.errors import ConfigError

LEVELS = (1, 2, 3, 4, 5)


def test_the_quantile_is_the_ceil_n_plus_1_times_level_th_smallest():
    errors = [float(i) for i in range(1, 20)]  # n = 19: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(errors, 0.9) == 18.0
    assert conformal_quantile(list(reversed(errors)), 0.5) == 10.0
    with pytest.raises(ConfigError, match="at least 9 calibration artworks"):
        conformal_quantile([0.1] * 5, 0.9)


def _simulated(rng: random.Random, n: int) -> tuple[list[float], list[dict]]:
    """Labels 1..5 and scores whose error grows with their std, as a model unsure in places would give."""
    labels, scores = [], []
    for _ in range(n):
        std = rng.uniform(0.2, 1.2)
        label = rng.randint(1, 5)
        scores.append({"d": {"score": label + rng.gauss(0, std), "std": std, "adapter": "d@1", "probs": []}})
        labels.append(float(label))
    return labels, scores


def test_coverage_on_fresh_data_is_near_the_level():
    rng = random.Random(5)
    labels, scores = _simulated(rng, 500)
    calibration = calibrate({"d": labels}, scores, level=0.9, eps=0.05, data_hash="sha256:x")
    hits = []
    for _ in range(20):
        fresh_labels, fresh = _simulated(rng, 200)
        for label, s in zip(fresh_labels, fresh, strict=True):
            low, high = with_interval("d", s["d"], calibration, LEVELS)["interval"]
            hits.append(low <= label <= high)
    assert 0.87 <= sum(hits) / len(hits) <= 0.93


def test_intervals_are_clipped_to_the_levels_and_absent_without_calibration():
    calibration = Calibration(
        level=0.9, eps=0.05, data_hash="h", dimensions={"d": DimensionCalibration(adapter="d@1", quantile=2.0, n=50)}
    )
    entry = {"score": 4.6, "std": 0.5, "adapter": "d@1", "probs": []}
    answered = with_interval("d", entry, calibration, LEVELS)
    assert answered["interval"] == [pytest.approx(4.6 - 1.1), 5] and answered["interval_level"] == 0.9
    assert "interval" not in with_interval("d", entry, None, LEVELS)
    assert "interval" not in with_interval("d", {**entry, "adapter": "d@2"}, calibration, LEVELS)  # another version
    assert "interval" not in with_interval("other", entry, calibration, LEVELS)


def test_a_dimension_whose_adapter_changed_keeps_no_calibration():
    calibration = Calibration(
        level=0.9,
        eps=0.05,
        data_hash="h",
        dimensions={
            "a": DimensionCalibration(adapter="a@1", quantile=1.0, n=50),
            "b": DimensionCalibration(adapter="b@1", quantile=1.0, n=50),
        },
    )
    kept = calibration.applying_to({"a": "a@1", "b": "b@2"})
    assert list(kept.dimensions) == ["a"]
    assert calibration.applying_to({"a": "a@9"}) is None


def test_the_calibration_is_stored_in_the_deployment_set_and_loaded_with_it(tmp_path, tiny_profile):
    from adapters.manifest import load_deployment
    from train.calibrate import store_calibration

    source = tiny_profile.deployment_path
    copy = source.parent / "test-calibration-copy.yaml"  # beside the original: its adapter paths are relative
    shutil.copyfile(source, copy)
    try:
        deployment = load_deployment(copy, base_dir=tiny_profile.base.resolved_path)
        labels = deployment.adapter_labels
        stored = Calibration(
            level=0.9,
            eps=0.05,
            data_hash="h",
            dimensions={dim: DimensionCalibration(adapter=label, quantile=1.5, n=40) for dim, label in labels.items()},
        )
        store_calibration(copy, stored)
        again = load_deployment(copy, base_dir=tiny_profile.base.resolved_path)
        assert again.calibration == stored and again.adapters.keys() == deployment.adapters.keys()
    finally:
        copy.unlink()


def test_eval_reports_each_dimensions_coverage_and_their_mean():
    from train.evaluate import add_interval_coverage

    scores = [
        {"a": {"score": 3.0, "interval": [2.0, 4.0], "interval_level": 0.9}, "b": {"score": 3.0}},
        {"a": {"score": 3.0, "interval": [2.5, 3.5], "interval_level": 0.9}, "b": {"score": 3.0}},
    ]
    report = {"dimensions": {"a": {}, "b": {}}, "mean": {}}
    add_interval_coverage(report, scores, {"a": [4, 5], "b": [1, 2]})
    assert (
        report["dimensions"]["a"]["interval_coverage"] == 0.5 and "interval_coverage" not in report["dimensions"]["b"]
    )
    assert report["mean"]["interval_coverage"] == 0.5 and report["interval_level"] == 0.9
    uncalibrated = {"dimensions": {"b": {}}, "mean": {}}
    add_interval_coverage(uncalibrated, scores, {"b": [1, 2]})
    assert uncalibrated == {"dimensions": {"b": {}}, "mean": {}}  # no interval, no made-up coverage

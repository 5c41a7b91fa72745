"""Intervals end to end: the committed tiny deployment is calibrated, so the live router's answers carry
`interval` (score -/+ quantile x (std + eps), clipped to 1..5) and `interval_level`; `kidsart calibrate` stores a
calibration in a deployment set (coverage in eval: tests/test_calibration.py; the study: docs/training.md)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import LIVE_API_KEY, drawing, png_bytes

pytestmark = pytest.mark.integration

KIDSART = str(Path(sys.executable).with_name("kidsart"))


def test_router_answers_carry_the_deployments_intervals(live_stack, tiny_profile):
    from adapters.manifest import load_profile_deployment
    from serve.client import ScoringClient

    calibration = load_profile_deployment(tiny_profile).calibration
    assert calibration is not None and calibration.level == 0.9
    with ScoringClient(live_stack.url, api_key=LIVE_API_KEY) as client:
        answer = client.score(png_bytes(drawing(7401)))
    for dim, entry in answer.scores.items():
        half = calibration.dimensions[dim].quantile * (entry.std + calibration.eps)
        assert entry.interval == pytest.approx([max(1, entry.score - half), min(5, entry.score + half)], abs=1e-9)
        assert entry.interval_level == 0.9 and 1 <= entry.interval[0] <= entry.score <= entry.interval[1] <= 5


def test_calibrate_stores_a_quantile_per_dimension_in_the_deployment_set(tmp_path, tiny_profile):
    from adapters.manifest import load_deployment

    source = tiny_profile.deployment_path
    copy = source.parent / "test-calibrate-cli.yaml"  # beside the original: its adapter paths are relative
    shutil.copyfile(source, copy)
    try:
        subprocess.run(
            [KIDSART, "synth", "--n", "20", "--seed", "611", "--out", str(tmp_path / "cal")],
            check=True,
            capture_output=True,
        )
        done = subprocess.run(
            [
                KIDSART,
                "calibrate",
                "--data",
                str(tmp_path / "cal/labels.csv"),
                "--images",
                str(tmp_path / "cal/images"),
                "--deployment",
                str(copy),
                "--level",
                "0.8",
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "realism: quantile" in done.stdout and "on 20 artworks" in done.stdout
        stored = load_deployment(copy, base_dir=tiny_profile.base.resolved_path).calibration
    finally:
        copy.unlink()
    assert stored.level == 0.8
    assert len(stored.dimensions) == 9 and all(e.n == 20 and e.quantile > 0 for e in stored.dimensions.values())

"""A 300+-image district against a fake router: SIGKILL at several points + --resume == an uninterrupted run.

The fake router's scores are a pure function of the bytes, so rows must match
exactly; the real-engine version (with its batch-composition noise) is in
test_district_integration.py. Also: the Ray Data pipeline gives the same rows.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from tests.conftest import free_port
from tests.district_fake_router import FakeRouter
from tests.district_helpers import generated_district, journal_keys, run, run_and_kill


@pytest.fixture(scope="module")
def district(tmp_path_factory):
    return generated_district(tmp_path_factory, "Kreis Süd – 2025", seed=11, schools=5, broken=10, duplicates=6)


@pytest.fixture(scope="module")
def router():
    with FakeRouter(free_port(), delay_s=0.03) as fake:
        yield fake


@pytest.fixture(scope="module")
def reference(district, router, tmp_path_factory):
    root, info = district
    out = tmp_path_factory.mktemp("reference")
    result = run([str(root), "--out", str(out), "--url", router.url, "--concurrency", "8", "--no-report"])
    assert result.returncode == 1, result.stderr
    frame = pd.read_parquet(out / "scores.parquet")
    assert len(frame) == info["expected_inputs"] and (frame.status != "pending").all()
    return frame


def test_sigkill_at_several_points_then_resume(district, router, reference, tmp_path):
    root, info = district
    out = tmp_path / "killed"
    args = [str(root), "--out", str(out), "--url", router.url, "--concurrency", "8", "--no-report", "--resume"]
    kills = 0
    for point in (0, 25, 110, 230, info["expected_inputs"]):  # the last one lands during export
        code = run_and_kill(args, out, point)
        kills += code is None
    assert kills >= 4
    result = run(args)
    assert result.returncode == 1, result.stderr
    keys = journal_keys(out)
    assert Counter(keys).most_common(1)[0][1] == 1, "an input was journaled twice"
    assert len(keys) == info["expected_inputs"]
    resumed = pd.read_parquet(out / "scores.parquet")
    pd.testing.assert_frame_equal(resumed, reference)
    assert pd.read_csv(out / "scores.csv", keep_default_na=False)["key"].tolist() == reference["key"].tolist()


def test_ray_data_pipeline_matches(district, router, reference, tmp_path):
    root, _ = district
    out = tmp_path / "ray"
    result = run([str(root), "--out", str(out), "--url", router.url, "--pipeline", "ray", "--no-report"], timeout=600)
    assert result.returncode == 1, result.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(out / "scores.parquet"), reference)

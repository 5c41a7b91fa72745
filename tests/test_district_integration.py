"""score-district against the real stack (tiny model): kills + resume, an engine restart, the Ray pipeline through
the router and, inside the stack's Ray, through the engine deployment's handles (killed and resumed).

One district of 300+ inputs (broken and duplicate files included) and the
session's one stack (`live_stack`), to amortise start-up:
1. an uninterrupted run (the reference);
2. the same district run into another folder, SIGKILLed at three points and resumed,
   with the engine killed while the last resume is running (Ray Serve replaces its replica);
   rows must be identical and scores equal up to the engine's batch-composition
   noise (measured and printed; asserted below 1e-3);
3. the Ray Data pipeline on a CSV manifest of 60 of the inputs: same scores;
4. the same 60 through the engine deployment's Ray handles (`--ray-address`), SIGKILLed once and
   resumed: each input once, the same scores.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from tests.conftest import engine_replicas, wait_for
from tests.district_helpers import (
    REPO,
    cli,
    generated_district,
    journal_keys,
    journal_lines,
    run,
    run_and_kill,
    score_columns,
)

pytestmark = pytest.mark.integration

NOISE_LIMIT = 1e-3


@pytest.fixture(scope="module")
def district(tmp_path_factory):
    return generated_district(tmp_path_factory, "Bezirk Nord – Schulen", seed=7, broken=8, duplicates=5)


def _compare(frame: pd.DataFrame, reference: pd.DataFrame) -> float:
    """Same rows, ids, status and errors; returns the max abs difference over score/probability columns."""
    ids = ["key", "school", "grade", "class", "sha256", "duplicate_of", "status", "error_type"]
    pd.testing.assert_frame_equal(frame[ids].reset_index(drop=True), reference[ids].reset_index(drop=True))
    numbers = score_columns(reference)
    a, b = frame[numbers].to_numpy(float), reference[numbers].to_numpy(float)
    assert (np.isnan(a) == np.isnan(b)).all()
    return float(np.nanmax(np.abs(a - b))) if np.isfinite(a).any() else 0.0


def test_district_kill_resume_engine_restart_and_ray(live_stack, district, tmp_path):
    root, info = district
    url = live_stack.url
    timings = {}

    started = time.monotonic()
    reference_run = run(
        [str(root), "--out", str(tmp_path / "ref"), "--url", url, "--concurrency", "32", "--no-report"], timeout=900
    )
    timings["uninterrupted"] = time.monotonic() - started
    assert reference_run.returncode == 1, reference_run.stderr  # the broken files are error rows
    reference = pd.read_parquet(tmp_path / "ref" / "scores.parquet")
    assert len(reference) == info["expected_inputs"]
    assert set(reference.loc[reference.status == "error", "key"]) == set(info["broken"])
    assert (reference.status != "pending").all()

    # 2. kills at three points, then a resume during which the engine is restarted
    out = tmp_path / "killed"
    args = [str(root), "--out", str(out), "--url", url, "--concurrency", "32", "--resume"]
    started = time.monotonic()
    total = info["expected_inputs"]
    for point in (int(total * 0.1), int(total * 0.35), int(total * 0.6)):
        assert run_and_kill([*args, "--no-report"], out, point, timeout=600) is None
    process = subprocess.Popen(cli(*args), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def restart_engine() -> None:
        """The engine dies mid-run (its EngineCore SIGKILLed); Ray Serve replaces the replica."""
        wait_for(
            lambda: journal_lines(out) >= int(total * 0.7) or process.poll() is not None,
            300,
            "the resumed run to reach 70%",
            poll=0.1,
        )
        os.kill(next(core for cores in engine_replicas().values() for core in cores), signal.SIGKILL)

    restarter = threading.Thread(target=restart_engine)
    restarter.start()
    try:
        _, stderr = process.communicate(timeout=900)
    finally:
        restarter.join(timeout=600)
    timings["killed_and_resumed_with_engine_restart"] = time.monotonic() - started
    assert process.returncode == 1, stderr[-3000:]
    assert "retrying" in stderr, "the engine restart was not seen by the run"
    keys = journal_keys(out)
    assert len(keys) == total and Counter(keys).most_common(1)[0][1] == 1
    resumed = pd.read_parquet(out / "scores.parquet")
    noise = _compare(resumed, reference)
    assert (out / "report.html").stat().st_size > 100_000
    print(f"\nbatch-composition noise (resumed + engine restart vs uninterrupted): max |diff| = {noise:.3g}")
    assert noise < NOISE_LIMIT

    # 3. the Ray Data pipeline on a CSV manifest of 60 inputs (relative paths: same keys)
    subset = reference.head(60)
    (root / "subset.csv").write_text(
        "path,student_id\n" + "".join(f'"{k}","{s}"\n' for k, s in zip(subset.key, subset.student_id, strict=True)),
        encoding="utf-8",
    )
    started = time.monotonic()
    ray_run = run(
        [str(root / "subset.csv"), "--out", str(tmp_path / "ray"), "--url", url, "--pipeline", "ray", "--no-report"],
        timeout=600,
    )
    timings["ray_60"] = time.monotonic() - started
    assert ray_run.returncode in (0, 1), ray_run.stderr[-3000:]
    ray_frame = pd.read_parquet(tmp_path / "ray" / "scores.parquet")
    merged = ray_frame.merge(subset, on="key", suffixes=("", "_ref"))
    assert len(merged) == 60 and (merged.status == merged.status_ref).all()
    from adapters.rubric import load_rubric

    dims = load_rubric("kidsartbench").dimension_names
    ok = merged[merged.status == "ok"]
    ray_noise = max(float(np.abs(ok[d].to_numpy(float) - ok[f"{d}_ref"].to_numpy(float)).max()) for d in dims)
    assert ray_noise < NOISE_LIMIT

    # 4. inside the cluster: --pipeline ray --ray-address (the live stack's Ray) scores through the engine
    # deployment with Ray handles, no URL; SIGKILLed mid-run, then resumed: every input once, the same scores
    import ray

    handles_out = tmp_path / "handles"
    handles_args = [
        str(root / "subset.csv"),
        "--out",
        str(handles_out),
        "--pipeline",
        "ray",
        "--ray-address",
        ray.get_runtime_context().gcs_address,
        "--ray-batch-size",
        "4",
        "--no-report",
        "--resume",
    ]
    started = time.monotonic()
    assert run_and_kill(handles_args, handles_out, 16, timeout=600) is None
    handles_run = run(handles_args, timeout=600)
    timings["handles_60_killed_and_resumed"] = time.monotonic() - started
    assert handles_run.returncode in (0, 1), handles_run.stderr[-3000:]
    keys = journal_keys(handles_out)
    assert len(keys) == 60 and Counter(keys).most_common(1)[0][1] == 1
    merged = pd.read_parquet(handles_out / "scores.parquet").merge(subset, on="key", suffixes=("", "_ref"))
    assert len(merged) == 60 and (merged.status == merged.status_ref).all()
    ok = merged[merged.status == "ok"]
    handles_noise = max(float(np.abs(ok[d].to_numpy(float) - ok[f"{d}_ref"].to_numpy(float)).max()) for d in dims)
    print(
        f"ray pipeline vs uninterrupted: max |score diff| = {ray_noise:.3g}; through handles (killed, resumed): "
        f"{handles_noise:.3g}; timings {timings}"
    )
    assert handles_noise < NOISE_LIMIT

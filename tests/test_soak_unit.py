"""loadtest.soak's verdict and memory readings (the soak itself is `make soak`, not part of the suite)."""

import os
import subprocess
import sys

import psutil
import pytest

from loadtest.soak import actor_processes, memory_verdict, tree_rss


def _samples(router, engine, every_s=30):
    return [
        {"t_s": i * every_s, "router_mb": r, "engine_mb": e}
        for i, (r, e) in enumerate(zip(router, engine, strict=True))
    ]


def test_growth_is_measured_from_the_first_sample_after_the_warmup():
    # the first minute's climb (to 200 / 1000) is not counted; 200 -> 219 is +9.5%, 1000 -> 1101 is +10.1%
    verdict = memory_verdict(_samples([100, 150, 200, 210, 219], [500, 800, 1000, 1050, 1101]), 60, 0.10)
    assert verdict["router"] == {"after_warmup_mb": 200, "end_mb": 219, "growth": 0.095, "ok": True}
    assert verdict["engine"]["growth"] == pytest.approx(0.101) and verdict["engine"]["ok"] is False


def test_shrinking_memory_passes_and_too_short_a_run_is_refused():
    assert memory_verdict(_samples([300, 300, 250], [900, 900, 800]), 30, 0.10)["router"]["ok"]
    with pytest.raises(ValueError, match="two samples after its 60 s warm-up"):
        memory_verdict(_samples([1, 2, 3], [1, 2, 3]), 60, 0.10)


def test_tree_rss_counts_children_and_a_gone_process_is_zero():
    touch = "import sys, time; x = b'x' * (64 << 20); print('ready', flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", touch], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"  # its 64 MB are written, so resident
        own = psutil.Process(os.getpid()).memory_info().rss
        assert tree_rss([psutil.Process(os.getpid())]) >= own + (64 << 20)
        gone = psutil.Process(child.pid)
    finally:
        child.kill()
        child.wait()
    assert tree_rss([gone]) == 0 and tree_rss([]) == 0


def test_actor_processes_finds_processes_by_their_title():
    marker = "kidsart-soak-test-marker-7"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        assert [p.pid for p in actor_processes(marker)] == [child.pid]
    finally:
        child.kill()
        child.wait()

"""The district job's two ways into a running application, measured: Ray handles vs the router URL.

`kidsart bench-district --profile tiny --images 96 --rounds 3` starts the profile's
stack once (engine replica + router, no keys, loopback), warms both paths on 16 images, then per round runs the same Ray
Data
pipeline (`--pipeline ray`, one actor, 8 images per batch, 4 batches in flight) over a fresh
synthetic district twice: through the engine deployment with handles (what `--ray-address`
does inside a cluster) and through the router URL (`--url`, what a client outside does), the
order alternating, each on its own images (no cache serves a repeat). It prints images/s per
run and the CPU seconds each process group used, and writes the figures as JSON.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

log = logging.getLogger("kidsart.district_paths")

GROUPS = {
    "engine (vLLM + replica)": ("VLLM::", "EngineServer"),
    "router replica": ("ScoringRouter",),
    "proxy": ("ProxyActor",),
    "district actors": ("MapWorker", "_Score", "ray::IDLE"),
}


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """pid -> (group, CPU seconds so far) of this process and its descendants."""
    import psutil

    me = psutil.Process()
    found = {me.pid: ("driver (journal)", sum(me.cpu_times()[:2]))}
    for process in me.children(recursive=True):
        try:
            text = " ".join(process.cmdline()) + " " + process.name()
            found[process.pid] = (
                next((g for g, marks in GROUPS.items() if any(m in text for m in marks)), "other Ray"),
                sum(process.cpu_times()[:2]),
            )
        except psutil.Error:
            continue
    return found


def _cpu_used(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group since `before`, over the processes alive now (one that ended meanwhile is not counted)."""
    totals = {name: 0.0 for name in [*GROUPS, "other Ray", "driver (journal)"]}
    for pid, (group, seconds) in _cpu_by_process().items():
        totals[group] += seconds - before.get(pid, (group, 0.0))[1]
    return {k: round(v, 1) for k, v in totals.items()}


def _run(path: str, district: Path, out: Path, url: str, runtime: dict, rubric: str) -> dict:
    from serve.district.job import DistrictJobConfig, run_job

    config = DistrictJobConfig(
        input=district, out=out, pipeline="ray", ray_batch_size=8, report=False, progress=False, rubric=rubric
    )
    before = _cpu_by_process()
    started = time.monotonic()
    if path == "handles":
        result = run_job(config, url=None, runtime=runtime)
    else:
        result = run_job(config, url=url)
    elapsed = time.monotonic() - started
    cpu = _cpu_used(before)
    summary = result.summary
    if summary["ok"] != summary["inputs"]:
        raise RuntimeError(f"{path}: {summary['ok']} of {summary['inputs']} scored")
    return {
        "path": path,
        "images": summary["inputs"],
        "seconds": round(elapsed, 1),
        "img_s": round(summary["images_per_s"], 2),
        "cpu_s": cpu,
    }


def run_district_paths(
    profile: str = "tiny", images: int = 96, rounds: int = 3, port: int = 8640, out: Path = Path("district-paths.json")
) -> dict:
    """Measure both paths (see the module docstring); the figures, also written to `out`."""
    from adapters.profiles import load_profile
    from serve.district.handles import served_runtime
    from serve.stack import Stack
    from train.district import make_district

    work = Path(tempfile.mkdtemp(prefix="kidsart-district-paths-"))
    runs = []
    with Stack(load_profile(profile), router_port=port, log_dir=work / "logs") as stack:
        runtime = served_runtime()
        for i, path in enumerate(("handles", "router")):  # warm-up: Ray Data's workers, the engine's first batches
            make_district(
                work / f"warm-{i}", seed=6900 + i, schools=1, grades=2, classes=2, images=16, broken=0, duplicates=0
            )
            _run(path, work / f"warm-{i}", work / f"warm-out-{i}", stack.url, runtime, runtime["rubric"])
        for round_ in range(rounds):
            order = ("handles", "router") if round_ % 2 == 0 else ("router", "handles")
            for i, path in enumerate(order):
                district = work / f"district-{round_}-{i}"
                make_district(
                    district,
                    seed=7000 + 10 * round_ + i,
                    schools=1,
                    grades=2,
                    classes=2,
                    images=images,
                    broken=0,
                    duplicates=0,
                )
                run = _run(path, district, work / f"out-{round_}-{i}", stack.url, runtime, runtime["rubric"])
                log.info(
                    "round %d %-8s %.2f images/s (%d images, %.1f s) cpu %s",
                    round_ + 1,
                    path,
                    run["img_s"],
                    run["images"],
                    run["seconds"],
                    run["cpu_s"],
                )
                runs.append(run)
    by_path = {p: sorted(r["img_s"] for r in runs if r["path"] == p) for p in ("handles", "router")}
    figures = {"profile": profile, "img_s": by_path, "runs": runs}
    Path(out).write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return figures
